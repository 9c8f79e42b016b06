"""Signed tokens: forged, tampered, truncated, expired, cross-purpose; the fast signer agrees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer.tokens import (
    CONFIRM,
    PREFERENCES,
    UNSUBSCRIBE,
    BadToken,
    IdTokenSigner,
    make_token,
    read_token,
)

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize("purpose", [UNSUBSCRIBE, PREFERENCES])
def test_fast_signer_is_byte_for_byte_make_token(purpose: str) -> None:
    for secret in ("s", "a much longer production secret key", "ünïcode"):
        fast = IdTokenSigner(secret, purpose)
        for subscriber_id in [*range(0, 500), 10**9, 2**40]:
            token = fast.make(subscriber_id)
            assert token == make_token(secret, purpose, subscriber_id)
            assert read_token(secret, purpose, token) == (subscriber_id, "")


def test_bad_tokens_are_refused() -> None:
    good = make_token("k", UNSUBSCRIBE, 42)
    payload, signature = good.split(".")
    other = make_token("k", UNSUBSCRIBE, 43).split(".")[0]
    for bad in ["", "x", good[:-1], good + "x", f"{other}.{signature}", f"{payload}.",
                make_token("other-key", UNSUBSCRIBE, 42), "." * 40, "a.b.c.d"]:
        with pytest.raises(BadToken):
            read_token("k", UNSUBSCRIBE, bad)
    # A preferences token is not an unsubscribe token.
    with pytest.raises(BadToken):
        read_token("k", UNSUBSCRIBE, make_token("k", PREFERENCES, 42))


def test_confirmation_tokens_expire_on_our_clock() -> None:
    token = make_token("k", CONFIRM, 7, issued_at=NOW, extra="req-1")
    week = 7 * 86400
    assert read_token("k", CONFIRM, token, now=NOW + timedelta(days=6),
                      max_age_seconds=week) == (7, "req-1")
    with pytest.raises(BadToken) as err:
        read_token("k", CONFIRM, token, now=NOW + timedelta(days=8), max_age_seconds=week)
    assert err.value.expired
    # An unsubscribe token (no issue time) is never accepted where expiry is required.
    with pytest.raises(BadToken):
        read_token("k", CONFIRM, make_token("k", CONFIRM, 7), now=NOW, max_age_seconds=week)


def test_message_ids_match_the_ledger_function() -> None:
    from datetime import date

    from mailer.ledger import MessageIds, message_id_for
    from mailer.models import Edition

    edition = Edition(id=7, edition_date=date(2026, 11, 26))
    ids = MessageIds("secret", edition, "labourlist.org")
    made = [ids.make(i) for i in range(1, 300)]
    assert made == [message_id_for("secret", edition, i, "labourlist.org") for i in range(1, 300)]
    assert len(set(made)) == len(made)
    # HMAC-SHA256 of "edition:row", its first 12 hex digits (ids must never change).
    import hashlib
    import hmac

    mac = hmac.new(b"secret", b"7:42", hashlib.sha256).hexdigest()[:12]
    assert ids.make(42) == f"<20261126.42.{mac}@labourlist.org>"
