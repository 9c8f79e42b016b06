"""The application object that every entry point (CLI, web, scheduler, worker) builds once."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer.clock import Clock
from mailer.config import Settings, load_settings
from mailer.db import instance_secret, make_engine, session_factory
from mailer.overrides import with_overrides


@dataclass
class App:
    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    _secret: str = field(default="", repr=False)
    #: The settings as configured (file + environment), before the staff's database overrides:
    #: what "no override" means on the console's settings page.
    configured: Settings | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings | None = None, clock: Clock | None = None) -> App:
        settings = settings or load_settings()
        engine = make_engine(settings.database_url)
        sessions = session_factory(engine)
        # Staff overrides (mailer/overrides.py) from the database; none before `mailer init`.
        return cls(settings=with_overrides(settings, sessions), clock=clock or Clock.from_env(),
                   engine=engine, sessions=sessions, configured=settings)

    @property
    def secret_key(self) -> str:
        """MAILER_SECRET_KEY, or a random key kept in this database (fresh installs)."""
        if not self._secret:
            self._secret = self.settings.secret_key or instance_secret(self.sessions)
        return self._secret

    def close(self) -> None:
        self.engine.dispose()
