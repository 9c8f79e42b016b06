"""Staff passwords hashed cheaply in tests: scrypt with N=1024 instead of werkzeug's 32768.

Every console test creates accounts and signs in, and the throttle tests try fifty passwords:
at a seventh of a second a hash that is minutes of a suite spent in scrypt. The hashes are
still scrypt (the stored form names its parameters, so checking works alike), and
`tests/test_hostile_staff_auth.py` checks that the product's own method is the strong one
(`PRODUCTION`). Subprocesses (`mailer staff add` run as a command) use the product's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailer import accounts

PRODUCTION = accounts.HASH_METHOD
CHEAP = "scrypt:1024:8:1"


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    patch.setattr(accounts, "HASH_METHOD", CHEAP)
    yield
    patch.undo()
