"""SMTP: one transport per connection (`SmtpTransport`) and a pool driving many (`SmtpPool`).

The transport registry imports this package for ``smtp://`` and ``smtps://`` DSNs. Inside it:
`connect` opens a session, `wire` builds the bytes written, `replies` reads the answers,
`transport` runs one message's exchange and `pool` drives many exchanges from one thread.
"""

from mailer.transports.smtp.pool import Pause, SmtpPool
from mailer.transports.smtp.transport import AMBIGUOUS_ERROR, SmtpTransport, run_steps
from mailer.transports.smtp.wire import wire_data

__all__ = ["AMBIGUOUS_ERROR", "Pause", "SmtpPool", "SmtpTransport", "run_steps", "wire_data"]
