"""Settings for a test: every path under the test's own folder, nothing from the environment."""

from __future__ import annotations

from pathlib import Path

from mailer.config import Settings, validate


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Valid settings on a SQLite file and the file outbox in `tmp_path`; `overrides` win.

    `templates_dir` points into `tmp_path` too, so an editor's overrides in the checkout's own
    `templates/` never reach the tests."""
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'test.db'}",
        "dsn": f"file://{tmp_path / 'outbox'}",
        "base_url": "https://mail.example.org",
        "secret_key": "test-secret-key",
        "feed_url": str(tmp_path / "feed.xml"),
        "templates_dir": str(tmp_path / "templates"),
        # No test looks a real domain up: the DNS tests turn it on with their own server.
        "dns_check": False,
        # The click writer on the web process's thread: a child process per test app costs
        # a start-up each; tests/test_click_writer.py and the outage test run it as a process.
        "click_writer": "thread",
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings
