"""What the sending-domain check compares and proposes: DKIM keys, alignment, record text.

Kept apart from the check itself so that each finding's fix (the exact record to publish) is
written in one place, and so the comparison of a published DKIM key with ours is tested on its
own.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.dkimsign import Key

_TAG = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*([^;]*)")


def tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC record's tags (`v`, `p`, `k`, ...); later duplicates are ignored."""
    found: dict[str, str] = {}
    for part in record.split(";"):
        match = _TAG.match(part)
        if match:
            found.setdefault(match.group(1).lower(), match.group(2).strip())
    return found


def dkim_public_bytes(record: str) -> bytes | None:
    """The key in a DKIM record's p= (whitespace removed), or None when it is empty or not
    base64: an empty p= is a revoked key."""
    value = re.sub(r"\s+", "", tags(record).get("p", ""))
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def key_matches(record: str, key: Key) -> bool:
    """Whether the DKIM record publishes the public half of `key`."""
    published = dkim_public_bytes(record)
    if published is None:
        return False
    public = key.private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return published == raw
    try:
        loaded = serialization.load_der_public_key(published)
    except (ValueError, TypeError):
        try:  # (some publish the bare PKCS#1 RSAPublicKey)
            loaded = serialization.load_der_public_key(_spki_of_pkcs1(published))
        except (ValueError, TypeError):
            return False
    return (isinstance(loaded, rsa.RSAPublicKey) and isinstance(public, rsa.RSAPublicKey)
            and loaded.public_numbers() == public.public_numbers())


def _spki_of_pkcs1(der: bytes) -> bytes:
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _length(len(der) + 1) + b"\x00" + der
    body = algorithm + bit_string
    return b"\x30" + _length(len(body)) + body


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def base_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2) by the public suffix list."""
    from checkdmarc.utils import get_base_domain  # noqa: PLC0415 - slow: see authdns

    return str(get_base_domain(domain)).lower()


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment: strict (`s`) wants the same name, relaxed the same
    organizational domain."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return domain == from_domain or base_domain(domain) == base_domain(from_domain)


def txt(name: str, value: str) -> str:
    """A TXT record as a zone file writes it: a value over 255 characters as several quoted
    strings, which resolvers join (a web console takes the value without the quotes)."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return f"{name}. IN TXT " + " ".join(f'"{chunk}"' for chunk in chunks)


def dmarc_record(from_domain: str, policy: str = "none", rua: str = "") -> str:
    """A DMARC record for the From domain, with aggregate reports to `rua` (or to
    dmarc-reports@ the domain)."""
    reports = rua or f"mailto:dmarc-reports@{from_domain}"
    return txt(f"_dmarc.{from_domain}", f"v=DMARC1; p={policy}; rua={reports}")


def spf_with(record: str | None, include: str) -> str:
    """`record` with `include` added before its all (or a new record), and `+all` made `~all`."""
    if not record:
        return " ".join(term for term in ("v=spf1", include, "~all") if term)
    terms = [("~all" if term in ("+all", "all") else term) for term in record.split()]
    if not include or include in terms:
        return " ".join(terms)
    ending = [t for t in terms if t.lstrip("+-~?") == "all" or t.startswith("redirect=")]
    body = [t for t in terms if t not in ending]
    return " ".join(body + [include] + (ending or ["~all"]))
