"""DKIM signatures (RFC 6376; Ed25519 per RFC 8463) on the messages we send over SMTP ourselves.

Gmail and Yahoo want bulk mail signed by the From domain. An API provider signs for us; over
`smtp://` the relay may not, so the transport signs each message here when `dkim_domain` and
a key are configured: RSA (`dkim_selector`) or Ed25519 (`dkim_ed25519_selector`), or both at
once (two DKIM-Signature fields; receivers that know Ed25519 use it, the rest RSA).

The keys come from the environment only (`MAILER_DKIM_PRIVATE_KEY`, one or two PEM blocks, or
a file named by `MAILER_DKIM_KEY_FILE`). Canonicalization is relaxed for the header fields and
simple for the body: the body is hashed as it is, by hashlib, in one pass; only the few signed
header fields are canonicalized in Python, and each signature is one RSA or Ed25519 operation
(`cryptography`). Every readers' copy differs (its links, its greeting), so each is signed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailer.config import Settings
from mailer.errors import ConfigError

#: Signed when present, in this order; From always. List-Unsubscribe and -Post: Gmail checks
#: that the one-click headers are covered.
SIGNED = ("from", "to", "subject", "date", "message-id", "reply-to", "list-id",
          "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type")
_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----",
                  re.S)
_WSP = re.compile(rb"[ \t]+")


@dataclass(frozen=True)
class Key:
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463: Ed25519 signs the SHA-256 of the data, not the data.
        return self.private.sign(hashlib.sha256(data).digest())

    def public_record(self) -> str:
        """The TXT record to publish at SELECTOR._domainkey.DOMAIN."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def load_keys(settings: Settings) -> list[Key]:
    """The configured keys ([] when DKIM signing is off); ConfigError when half configured."""
    pem = settings.dkim_private_key.encode()
    if not pem and settings.dkim_key_file:
        try:
            pem = Path(settings.dkim_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"MAILER_DKIM_KEY_FILE: cannot read it ({exc.strerror})") from None
    if not settings.dkim_domain:
        if pem:
            raise ConfigError("a DKIM key is set but dkim_domain is not")
        return []
    keys: list[Key] = []
    for block in _PEM.findall(pem):
        try:
            private = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"MAILER_DKIM_PRIVATE_KEY: not a usable key ({exc})") from None
        if isinstance(private, rsa.RSAPrivateKey):
            if private.key_size < 1024:
                raise ConfigError("MAILER_DKIM_PRIVATE_KEY: an RSA key of at least 1024 bits "
                                  "(2048 recommended)")
            keys.append(Key(_selector(settings.dkim_selector, "dkim_selector"), "rsa-sha256",
                            private))
        elif isinstance(private, ed25519.Ed25519PrivateKey):
            keys.append(Key(_selector(settings.dkim_ed25519_selector, "dkim_ed25519_selector"),
                            "ed25519-sha256", private))
        else:
            raise ConfigError("MAILER_DKIM_PRIVATE_KEY: only RSA and Ed25519 keys sign DKIM")
    if not keys:
        raise ConfigError("dkim_domain is set but no DKIM key is (MAILER_DKIM_PRIVATE_KEY or "
                          "MAILER_DKIM_KEY_FILE)")
    return keys


def _selector(value: str, key: str) -> str:
    if not value:
        raise ConfigError(f"setting {key}: needed for the DKIM key given")
    return value


class Signer:
    """Signs messages for one domain with one or two keys."""

    def __init__(self, domain: str, keys: list[Key]) -> None:
        self.domain = domain
        self.keys = keys

    @classmethod
    def of(cls, settings: Settings) -> Signer | None:
        keys = load_keys(settings)
        return cls(settings.dkim_domain, keys) if keys else None

    def sign(self, message: bytes, *, now: int) -> bytes:
        """The message with its DKIM-Signature field(s) first."""
        newline = b"\r\n" if b"\r\n" in message[:2000] else b"\n"
        crlf = message if newline == b"\r\n" else message.replace(b"\n", b"\r\n")
        head, _, body = crlf.partition(b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(_simple_body(body)).digest()).decode()
        fields = _fields(head)
        names = [name for name in SIGNED if name in fields]
        signed = b"".join(_relaxed(name, fields[name]) for name in names)
        out = b""
        fold = "\r\n\t" if newline == b"\r\n" else "\n\t"
        for key in self.keys:
            # The field as it is written, b= empty, is what is signed (relaxed: its folds
            # become single spaces for the verifier too); b='s value may be folded anywhere.
            tags = _fold(f"v=1; a={key.algorithm}; c=relaxed/simple; d={self.domain}; "
                         f"s={key.selector}; t={now}; h={':'.join(names)}; bh={body_hash}; b=",
                         fold)
            data = signed + _relaxed("dkim-signature", tags.encode()).rstrip(b"\r\n")
            signature = base64.b64encode(key.sign(data)).decode()
            value = tags + fold.join(signature[i:i + 72] for i in range(0, len(signature), 72))
            out += b"DKIM-Signature: " + value.encode() + newline
        return out + message


def _simple_body(body: bytes) -> bytes:
    """RFC 6376 simple body: trailing empty lines reduced to none, then one CRLF at the end."""
    stripped = body.rstrip(b"\r\n")
    return stripped + b"\r\n" if stripped else b"\r\n"


def _fields(head: bytes) -> dict[str, bytes]:
    """Each header field's unfolded value by lower-case name (the last one of a name, which
    is the one a signature covers first)."""
    found: dict[str, bytes] = {}
    for line in re.split(rb"\r\n(?![ \t])", head):
        name, sep, value = line.partition(b":")
        if sep:
            found[name.strip().lower().decode("ascii", "replace")] = value
    return found


def _relaxed(name: str, value: bytes) -> bytes:
    unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return name.encode() + b":" + _WSP.sub(b" ", unfolded).strip(b" \t") + b"\r\n"


def _fold(value: str, fold: str, width: int = 72) -> str:
    """Fold at the spaces between tags only (a long h= stays whole on its line: a fold
    inside a tag's value would be a space in what the verifier hashes)."""
    lines, line = [], ""
    for part in value.split(" "):
        if line and len(line) + 1 + len(part) > width:
            lines.append(line)
            line = part
        else:
            line = f"{line} {part}" if line else part
    lines.append(line)
    return fold.join(lines)
