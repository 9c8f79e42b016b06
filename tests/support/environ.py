"""The environment of a `mailer` subprocess or CLI run in a test."""

from __future__ import annotations

import os


def bare_environ(**values: str) -> dict[str, str]:
    """This process's environment without a developer's MAILER_* variables (only what the
    test sets counts), with the sending domain's DNS check off (no test looks a real domain
    up: tests/conftest.py), and `values` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DNS_CHECK"] = "0"
    env.update(values)
    return env
