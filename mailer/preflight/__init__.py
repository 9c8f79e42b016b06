"""Preflight: no edition leaves unless it is a good email.

`runner` builds the sample message and runs everything; `checks` holds the checks, one
function each; `page`, `links`, `screenshots` and `spamassassin` are what the checks and the
console use to look at a message. Callers use the names below.
"""

from mailer.preflight.findings import ERROR, WARNING, Finding, Report
from mailer.preflight.runner import Sample, check_before_send, record, run_checks, sample_message
from mailer.preflight.screenshots import render_screenshots

__all__ = [
    "ERROR",
    "WARNING",
    "Finding",
    "Report",
    "Sample",
    "check_before_send",
    "record",
    "render_screenshots",
    "run_checks",
    "sample_message",
]
