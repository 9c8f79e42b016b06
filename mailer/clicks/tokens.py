"""Short signed tokens for `/r/<token>`: an edition, a position in its link list, in a
subject test the test group whose copy carried it, and in per-reader mode the delivery.

The text part shows every link whole, so the URL must stay under 80 characters; an
itsdangerous token (a JSON payload and a 27-character SHA-1 signature) would not. The payload
is two or three unsigned LEB128 integers and the signature an HMAC-SHA256 truncated to 8 bytes
(link) and 6 bytes (reader), base64url without padding: ``/r/`` plus about 30 characters.
Forging one takes 2^64 (2^48) guesses against a throttled endpoint, and a forged token could
only ever reach a link the edition already carried, because the target is looked up, never
read from the token.

A subject test group (`mailer.subject_test`) is a third number in the link part: a group
holds a share of the whole audience, so it names no reader.

The reader part is separate and signed with the edition, so the link part is the same for
every recipient (rendered once per edition) and only the suffix is filled per recipient.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

LINK_MAC = 8
READER_MAC = 6
MAX_TOKEN = 80  # characters; anything longer is not one of ours
#: Verified link parts remembered, so a popular link is not re-verified on every click.
#: Only parts whose signature checked are kept: a forged one can never be served from it.
VERIFIED_CACHE = 4096
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class BadLinkToken(ValueError):
    """Forged, truncated, tampered or not one of ours."""


@dataclass(frozen=True)
class LinkRef:
    """What a token names. `delivery_id` is set only for a genuine per-reader token;
    `reader_forged` says a reader part was present but did not verify (the link still
    works: the click is not counted)."""

    edition_id: int
    position: int
    delivery_id: int | None = None
    reader_forged: bool = False
    test_group: int = 0


class LinkSigner:
    """Makes and reads link tokens with a key derived from the instance secret."""

    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode("utf-8"), b"mailer.clicks.link-token",
                       hashlib.sha256).digest()
        self._link = hmac.new(key, b"L", hashlib.sha256)
        self._reader = hmac.new(key, b"R", hashlib.sha256)
        self._verified: dict[str, LinkRef] = {}

    def link_token(self, edition_id: int, position: int, test_group: int = 0) -> str:
        """The per-edition part, the same in every recipient's copy (of one subject test
        group, when `test_group` is set)."""
        payload = _uvarint(edition_id) + _uvarint(position)
        if test_group:
            payload += _uvarint(test_group)
        return _b64(payload + self._mac(self._link, payload, LINK_MAC))

    def reader_tag(self, edition_id: int, delivery_id: int) -> str:
        """The per-recipient suffix (without its leading dot) of a per-reader token."""
        payload = _uvarint(delivery_id)
        mac = self._mac(self._reader, _uvarint(edition_id) + payload, READER_MAC)
        return _b64(payload + mac)

    def read(self, token: str) -> LinkRef:
        """What `token` names, or BadLinkToken when the link part does not verify."""
        if not token or len(token) > MAX_TOKEN:
            raise BadLinkToken("not a link token")
        link_part, dot, reader_part = token.partition(".")
        link = self._verified.get(link_part)
        if link is None:
            edition_id, position, group = self._verify_link(link_part)
            link = LinkRef(edition_id, position, test_group=group)
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.clear()  # a whole new set is cheaper than an LRU's upkeep
            self._verified[link_part] = link
        if not dot:
            return link  # (immutable: one object serves every click on the link)
        delivery_id = self._read_reader(link.edition_id, reader_part)
        return LinkRef(link.edition_id, link.position, delivery_id,
                       reader_forged=delivery_id is None, test_group=link.test_group)

    def _verify_link(self, link_part: str) -> tuple[int, int, int]:
        raw = _unb64(link_part)
        if raw is None or len(raw) <= LINK_MAC:
            raise BadLinkToken("not a link token")
        payload, mac = raw[:-LINK_MAC], raw[-LINK_MAC:]
        if not hmac.compare_digest(mac, self._mac(self._link, payload, LINK_MAC)):
            raise BadLinkToken("signature does not match")
        numbers = _read_uvarints(payload)
        if numbers is None or len(numbers) not in (2, 3) or (len(numbers) == 3
                                                             and numbers[2] == 0):
            raise BadLinkToken("not a link token")
        return numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 0

    def _read_reader(self, edition_id: int, part: str) -> int | None:
        raw = _unb64(part)
        if raw is None or len(raw) <= READER_MAC:
            return None
        payload, mac = raw[:-READER_MAC], raw[-READER_MAC:]
        expected = self._mac(self._reader, _uvarint(edition_id) + payload, READER_MAC)
        if not hmac.compare_digest(mac, expected):
            return None
        numbers = _read_uvarints(payload)
        return numbers[0] if numbers is not None and len(numbers) == 1 else None

    @staticmethod
    def _mac(state: hmac.HMAC, payload: bytes, size: int) -> bytes:
        mac = state.copy()
        mac.update(payload)
        return mac.digest()[:size]


def _uvarint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, the high bit set on every byte but the last."""
    if value < 0:
        raise ValueError("link tokens carry non-negative numbers only")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarints(data: bytes) -> list[int] | None:
    """The integers in `data`, or None if it is not a whole number of minimal varints."""
    numbers: list[int] = []
    value = shift = 0
    for i, byte in enumerate(data):
        if shift > 63:
            return None
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        if byte == 0 and shift and i:  # a non-minimal encoding: not ours
            return None
        numbers.append(value)
        value = shift = 0
    return numbers if shift == 0 else None


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes | None:
    if not text or len(text) % 4 == 1 or not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
