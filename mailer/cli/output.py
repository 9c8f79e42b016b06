"""How the command line speaks: plain `warning:` lines, and help that finishes its sentences.

A person running `mailer send` or `mailer demo` reads the log lines as messages, so without
`-v` each is `warning: ...` or `error: ...`, as the one-line errors are (`common.fail`), with
no timestamp or module name; `-v` and the daemon (`mailer scheduler`, whose log is read later)
keep the timestamped form. The command lists of `--help` show each command's whole first
sentence, wrapped, instead of Click's 45 characters cut with "...".
"""

from __future__ import annotations

import logging
import re
import types

import click

DETAILED = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """`warning: message` (and the traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(DETAILED) if verbose else PlainFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        handlers=[handler])


def timestamped() -> None:
    """For a daemon: every handler of the root logger writes the detailed form."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(DETAILED))


def first_sentence(command: click.Command) -> str:
    """A command's summary: its `short_help`, or the first sentence of its help, whole."""
    if command.short_help:
        return command.short_help
    paragraph = (command.help or "").split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    match = re.search(r"(?<=[.!?])\s", text)
    return text[:match.start()] if match else text


def _format_commands(self: click.Group, ctx: click.Context,
                     formatter: click.HelpFormatter) -> None:
    rows = []
    for name in self.list_commands(ctx):
        command = self.get_command(ctx, name)
        if command is not None and not command.hidden:
            rows.append((name, first_sentence(command)))
    if rows:
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def whole_summaries(group: click.Group) -> None:
    """Make `group` (and the groups under it) list commands with whole sentences."""
    group.format_commands = types.MethodType(_format_commands, group)  # type: ignore[method-assign]
    for command in group.commands.values():
        if isinstance(command, click.Group):
            whole_summaries(command)
