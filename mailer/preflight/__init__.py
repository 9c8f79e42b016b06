"""Preflight: no edition leaves unless it is a good email (see runner.py for how)."""

from mailer.preflight.runner import (  # noqa: F401 - the package's API, moved whole to runner
    ERROR,
    WARNING,
    Finding,
    Report,
    Sample,
    check_before_send,
    check_hidden_text,
    check_live_links,
    parse_html,
    parse_spamassassin,
    record,
    render_screenshots,
    run_checks,
    sample_message,
)
