"""The email templates: where each one is found, the Jinja environment, copies for editing.

The bundled templates (mailer/templates/) are the defaults, so an installed wheel works as it
is. A file of the same name in the newsroom's `templates_dir` (templates/ at the root of a
checkout) replaces one of them, file by file: an editor changes the email without touching the
package, and keeps the bundled version of everything else. Everything that renders an email
(send, preview, preflight, the archive page, confirmations) renders through `render_template`,
so all of them see the same files.

The staff console's and the public pages' own templates (mailer/templates/web/) are not email
templates; Flask loads them (mailer.web), and they are not copied for editing.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.loaders import split_template_path

from mailer.config import BUNDLED_TEMPLATES, Settings
from mailer.errors import ConfigError, MailerError

# Under BUNDLED_TEMPLATES but not an email template: the web pages' templates and styles.
WEB_FOLDER = "web"


class TemplateError(MailerError):
    """An email template does not parse or render; the message names the file and the line."""


def template_folders(settings: Settings) -> list[Path]:
    """Where email templates are looked up, first match wins: `templates_dir` (resolved against
    the working directory now, as the default database is; left out when it does not exist)
    and then the bundled folder."""
    folders: list[Path] = []
    if settings.templates_dir:
        own = Path(settings.templates_dir).resolve()
        if own.is_dir() and own != BUNDLED_TEMPLATES:
            folders.append(own)
    return [*folders, BUNDLED_TEMPLATES]


def render_template(settings: Settings, name: str, context: dict[str, Any]) -> str:
    """One template rendered, or a TemplateError naming the file and line: an editor's typo in
    an override must say where it is, in one line, not end a send in a traceback."""
    try:
        return _env(settings).get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        where = _shown(exc.filename) if exc.filename else exc.name or name
        raise TemplateError(f"template {where}, line {exc.lineno}: {_one_line(exc.message)}"
                            ) from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {name}: {_one_line(exc.message) or type(exc).__name__}"
                            ) from None


def bundled_templates() -> list[str]:
    """The bundled email templates' names ("edition.mjml.j2", "partials/story.mjml.j2" ...)."""
    return sorted(
        path.relative_to(BUNDLED_TEMPLATES).as_posix()
        for path in BUNDLED_TEMPLATES.rglob("*")
        if path.is_file() and path.relative_to(BUNDLED_TEMPLATES).parts[0] != WEB_FOLDER
        and "__pycache__" not in path.parts
    )


@dataclass(frozen=True)
class TemplateFile:
    """One email template and the file that is used for it."""

    name: str
    used: Path
    overridden: bool


def template_files(settings: Settings) -> list[TemplateFile]:
    """Every bundled email template with the file each render uses for it."""
    loader = OverridingLoader(template_folders(settings))
    files = []
    for name in bundled_templates():
        used = Path(loader.path_of(name) or BUNDLED_TEMPLATES / name)
        files.append(TemplateFile(name, used, not used.is_relative_to(BUNDLED_TEMPLATES)))
    return files


def copy_templates(settings: Settings, names: Sequence[str] = (), *,
                   force: bool = False) -> list[Path]:
    """Copy bundled email templates (all, or those named) into `templates_dir` for editing.

    Refuses, copying nothing, when a target file exists and `force` is not given: a copy
    would replace an editor's work with the defaults.
    """
    if not settings.templates_dir:
        raise ConfigError("setting templates_dir: empty, so there is no folder to copy the "
                          "templates to (set it, e.g. to templates)")
    known = bundled_templates()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"no bundled template {unknown[0]!r} (there are: {', '.join(known)})")
    target = Path(settings.templates_dir)
    wanted = list(dict.fromkeys(names)) or known
    existing = [target / name for name in wanted if (target / name).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]} already exists{more}; --force overwrites")
    copied = []
    for name in wanted:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUNDLED_TEMPLATES / name, destination)
        copied.append(destination)
    return copied


class OverridingLoader(ChoiceLoader):
    """The folders in order, file by file (a Jinja ChoiceLoader of one FileSystemLoader each).

    A compiled template is reused until its file changes or a file of the same name appears in
    an earlier folder, so an override saved while the scheduler runs is used from the next
    render rather than after a restart.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        super().__init__([FileSystemLoader(str(folder)) for folder in folders])
        self.folders = tuple(str(folder) for folder in folders)

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = super().get_source(environment, template)

        def fresh() -> bool:
            return self.path_of(template) == filename and (uptodate is None or uptodate())

        return source, filename, fresh

    def path_of(self, template: str) -> str | None:
        """The file `template` names now: the first folder that has it."""
        pieces = split_template_path(template)
        for folder in self.folders:
            candidate = posixpath.join(folder, *pieces)
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
        return None


def _env(settings: Settings) -> Environment:
    return _env_for(tuple(template_folders(settings)))


@lru_cache(maxsize=8)
def _env_for(folders: tuple[Path, ...]) -> Environment:
    # Everything is autoescaped except the text templates (.txt.j2), so a new HTML or MJML
    # template can never be added unescaped by accident.
    env = Environment(
        loader=OverridingLoader(folders),
        autoescape=select_autoescape(enabled_extensions=(), disabled_extensions=("txt.j2", "txt"),
                                     default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = _wrap
    return env


def _wrap(text: str, width: int = 72, indent: str = "") -> str:
    """Wrap prose for the text part; URLs and long words are never broken."""
    return "\n".join(
        textwrap.fill(para, width=width, initial_indent=indent, subsequent_indent=indent,
                      break_long_words=False, break_on_hyphens=False)
        for para in text.split("\n")
    )


def _shown(filename: str) -> str:
    """A template's path as an editor would type it: relative to the working directory when
    it is inside it."""
    path = Path(filename)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else filename


def _one_line(message: str | None) -> str:
    return " ".join((message or "").split())
