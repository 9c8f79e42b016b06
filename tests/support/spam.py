"""The SpamAssassin fixture: each test that uses it scores afresh and leaves nothing running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailer.preflight import spamassassin


@pytest.fixture
def fresh_spamassassin() -> Iterator[None]:
    """Clear the score cache, and stop a SpamAssassin started ahead, before and after a test."""
    spamassassin._spam_cache.clear()
    yield
    spamassassin.release()
    spamassassin._spam_cache.clear()
