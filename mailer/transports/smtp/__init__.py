"""SMTP: one transport per connection (`SmtpTransport`) and a pool driving many (`SmtpPool`).

The transport registry imports this package for ``smtp://`` and ``smtps://`` DSNs. Inside it:
`connect` opens a session, `wire` builds the bytes written, `replies` reads the answers,
`transport` runs one message's exchange and `pool` drives many exchanges from one thread.
"""

from mailer.transports.smtp.pool import SmtpPool, run_steps
from mailer.transports.smtp.transport import AMBIGUOUS_ERROR, SmtpTransport
from mailer.transports.smtp.wire import wire_data

__all__ = ["AMBIGUOUS_ERROR", "SmtpPool", "SmtpTransport", "run_steps", "wire_data"]
