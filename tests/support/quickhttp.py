"""pytest-httpserver's server, stopped at once.

Its thread serves with `serve_forever()`'s default poll interval, so `stop()` waited up to half
a second for the loop to look at its shutdown flag: for every fake provider, SNS and web site a
test starts. This one looks every 10 ms.
"""

from __future__ import annotations

import pytest_httpserver

POLL_SECONDS = 0.01


class HTTPServer(pytest_httpserver.HTTPServer):
    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=POLL_SECONDS)
