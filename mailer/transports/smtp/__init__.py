"""SMTP: one transport per connection (`SmtpTransport`) and a pool driving many (`SmtpPool`).

The transport registry imports this package for ``smtp://`` and ``smtps://`` DSNs.
"""

from mailer.transports.smtp.transport import (
    AMBIGUOUS_ERROR,
    Pause,
    SmtpPool,
    SmtpTransport,
    dead_address_status,
    is_hard_bounce,
    run_steps,
    wire_data,
)

__all__ = [
    "AMBIGUOUS_ERROR",
    "Pause",
    "SmtpPool",
    "SmtpTransport",
    "dead_address_status",
    "is_hard_bounce",
    "run_steps",
    "wire_data",
]
