"""Gifts from the donation platform's export, attributed to the edition that asked for them.

The donate link of each edition carries `utm_content` naming the edition and the ask
(`mailer.render.donation_content`, e.g. ``donate-20261126-standard``); the platform's export
gives it back with each gift. `import_gifts` reads that export (CSV: date, amount, currency,
utm_content, optionally email and a reference or id; other columns are ignored) and stores one
`Gift` row per gift:

* `edition_id` when `utm_content` is an edition's donate link; a gift that names none is still
  stored (it counts for nothing per edition, and nobody has to tidy the export first).
* `subscriber_id` only when that edition was sent with ``click_tracking = "per-reader"`` and
  the row's address is a subscriber who was sent the edition. The address is used for that
  look-up and forgotten: it is in no column, no reference and no message.
* `reference` makes importing the same export again (or a later export that repeats it) add
  nothing. With a ``reference`` or ``id`` column it is the platform's own id. Without one it
  is a hash of the row's date, amount, currency and utm_content (never the address), plus the
  row's ordinal among rows of the file with the same four values: two equal £5 gifts on one
  day are two gifts, and the same file read twice is still two.

Amounts are exact: "12.50", "£12.50" or "1,250.00" become hundredths of the currency unit
(`Gift.amount_minor`, 1250), through `Decimal`, never a float.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.clicks.links import PER_READER
from mailer.errors import MailerError
from mailer.models import DELIVERED, DONATE, Delivery, Edition, EditionLink, Gift, Subscriber
from mailer.subscribers import InvalidAddress, normalise_email, restore_cell

#: Column names, compared without case or surrounding spaces; the first found wins.
COLUMNS = {
    "date": ("date", "given_on", "donation date"),
    "amount": ("amount",),
    "currency": ("currency",),
    "utm_content": ("utm_content", "utm content"),
    "email": ("email", "email address"),
    "reference": ("reference", "id"),
}
REQUIRED = ("date", "amount", "currency", "utm_content")
#: Symbols an amount may start with, and the currency each names (None: several do).
SYMBOLS = {"£": "GBP", "€": "EUR", "$": None}
_PLAIN = re.compile(r"\d+(\.\d{1,2})?")
_GROUPED = re.compile(r"\d{1,3}(,\d{3})+(\.\d{1,2})?")
_UK_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
MAX_REFERENCE = 190


class GiftFileError(MailerError, ValueError):
    """The file cannot be imported at all (no header, a required column missing)."""


@dataclass(frozen=True)
class GiftRow:
    """One good row of the export. `email` lives only as long as the import."""

    line: int
    given_on: date
    amount_minor: int
    currency: str
    utm_content: str
    reference: str
    email: str = field(default="", repr=False)


@dataclass
class GiftImport:
    """What an import did: counts, and each rejected line with its reason."""

    added: int = 0
    attributed: int = 0  # of `added`: to an edition
    linked: int = 0  # of `added`: to a subscriber (per-reader editions only)
    already: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"added {self.added} gifts ({self.attributed} attributed to an edition, "
                f"{self.linked} to a reader), already imported {self.already}, "
                f"rejected {len(self.errors)}")

    def lines(self) -> Iterator[str]:
        yield self.summary()
        for line, reason in self.errors:
            yield f"line {line}: {reason}"


# ---- reading one row -------------------------------------------------------------------------


def parse_amount(text: str, currency: str = "") -> tuple[int, str]:
    """("£12.50", "") -> (1250, "GBP"): hundredths of the unit, and the currency the symbol
    names ("" when it names none). Refuses what is not a positive amount with at most two
    decimals, rather than guess (a European "12,50" is refused, not read as 1,250)."""
    raw = text.strip().replace(" ", "")
    named = ""
    if raw[:1] in SYMBOLS:
        named = SYMBOLS[raw[:1]] or ""
        raw = raw[1:]
    elif raw[-3:].upper() == currency.upper() and currency:
        raw = raw[:-3]
    if raw.startswith("-"):
        raise ValueError(f"negative amount {text.strip()!r} (refunds are not imported)")
    if not (_PLAIN.fullmatch(raw) or _GROUPED.fullmatch(raw)):
        raise ValueError(f"amount {text.strip()[:40]!r} is not a number like 12.50 or £12.50")
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:  # (the patterns above let through only what Decimal reads)
        raise ValueError(f"amount {text.strip()[:40]!r} is not a number") from None
    if value <= 0:
        raise ValueError("amount must be more than zero")
    return int(value * 100), named


def parse_date(text: str) -> tuple[date, str]:
    """The gift's day, and the date-time as written in a canonical form (part of the row's
    identity: two gifts on one day at different times are different rows). ISO 8601
    (2026-11-26, 2026-11-26 08:15:00, 2026-11-26T08:15:00Z) or the British 26/11/2026."""
    raw = text.strip()
    uk = _UK_DATE.fullmatch(raw)
    try:
        if uk:
            day, month, year, hour, minute, second = uk.groups()
            when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                            int(second or 0))
            return when.date(), when.isoformat() if hour else when.date().isoformat()
        if len(raw) == 10:
            given = date.fromisoformat(raw)
            return given, given.isoformat()
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return when.date(), when.isoformat()
    except ValueError:
        raise ValueError(f"date {raw[:40]!r} is not a date like 2026-11-26 or 26/11/2026") \
            from None


def parse_currency(text: str, named: str) -> str:
    code = text.strip().upper() or named
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError(f"currency {text.strip()[:20]!r} is not a three-letter code like GBP"
                         if text.strip() else "no currency")
    if named and code != named:
        raise ValueError(f"the amount is in {named} but the currency column says {code}")
    return code


def row_reference(when: str, amount_minor: int, currency: str, utm_content: str,
                  ordinal: int) -> str:
    """The reference of a row without an id of its own: no personal data goes in."""
    key = "\x1f".join((when, str(amount_minor), currency, utm_content, str(ordinal)))
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# ---- reading the file ------------------------------------------------------------------------


def _header_map(fieldnames: Sequence[str] | None) -> dict[str, str]:
    """Our name for each column found -> the file's spelling of it."""
    spelled = {name.strip().lower(): name for name in fieldnames or [] if name}
    found = {}
    for ours, names in COLUMNS.items():
        for name in names:
            if name in spelled:
                found[ours] = spelled[name]
                break
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise GiftFileError(f"the CSV has no {', '.join(missing)} column "
                            f"(it needs {', '.join(REQUIRED)}; email is optional)")
    return found


def read_gifts(stream: IO[str], report: GiftImport) -> Iterator[GiftRow]:
    """The good rows in file order; each bad line goes into `report` with its reason."""
    reader = csv.DictReader(stream)
    try:
        columns = _header_map(reader.fieldnames)
    except csv.Error as exc:
        raise GiftFileError(f"the CSV header cannot be read: {exc}") from None
    ordinals: Counter[tuple[str, int, str, str]] = Counter()
    references: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit()
            report.errors.append((reader.line_num, f"the CSV cannot be read from here on: {exc}"))
            return
        line = reader.line_num
        cells = {ours: restore_cell(row.get(theirs) or "").strip()
                 for ours, theirs in columns.items()}
        if not any(cells.values()):
            continue  # a blank line, as spreadsheets leave at the end
        try:
            gift = _gift(line, cells, ordinals)
        except ValueError as exc:
            report.errors.append((line, str(exc)))
            continue
        first = references.setdefault(gift.reference, line)
        if first != line:
            report.errors.append((line, f"reference {cells['reference']!r} repeats line {first}"))
            continue
        yield gift


def _gift(line: int, cells: dict[str, str], ordinals: Counter[tuple[str, int, str, str]],
          ) -> GiftRow:
    given_on, when = parse_date(cells["date"])
    amount_minor, named = parse_amount(cells["amount"], cells["currency"])
    currency = parse_currency(cells["currency"], named)
    utm = cells["utm_content"]
    if len(utm) > 200:
        raise ValueError("utm_content is longer than 200 characters")
    if "reference" in cells:
        if not cells["reference"]:
            raise ValueError("no reference (the file has a reference column)")
        if len(cells["reference"]) > MAX_REFERENCE:
            raise ValueError(f"reference is longer than {MAX_REFERENCE} characters")
        reference = "ref:" + cells["reference"]
    else:
        key = (when, amount_minor, currency, utm)
        reference = row_reference(*key, ordinals[key])
        ordinals[key] += 1
    return GiftRow(line, given_on, amount_minor, currency, utm, reference,
                   cells.get("email", ""))


# ---- storing ---------------------------------------------------------------------------------


def import_gifts(session: Session, stream: IO[str], *, at: datetime) -> GiftImport:
    """Import the export in `stream` inside the caller's transaction (`csv_text` opens a file
    in the encoding it was written in). Rows already imported are counted, not changed."""
    report = GiftImport()
    rows = list(read_gifts(stream, report))
    known = _known_references(session, [row.reference for row in rows])
    editions = _donate_editions(session, {row.utm_content for row in rows if row.utm_content})
    for row in rows:
        if row.reference in known:
            report.already += 1
            continue
        edition = editions.get(row.utm_content)
        subscriber_id = _reader(session, edition, row.email) if edition else None
        session.add(Gift(reference=row.reference, given_on=row.given_on,
                         amount_minor=row.amount_minor, currency=row.currency,
                         utm_content=row.utm_content, edition_id=edition[0] if edition else None,
                         subscriber_id=subscriber_id, imported_at=at))
        report.added += 1
        report.attributed += edition is not None
        report.linked += subscriber_id is not None
    session.flush()
    return report


def _known_references(session: Session, references: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(references), 500):  # bound the IN list
        chunk = references[start:start + 500]
        known.update(session.scalars(select(Gift.reference).where(Gift.reference.in_(chunk))))
    return known


def _donate_editions(session: Session, contents: set[str]) -> dict[str, tuple[int, str]]:
    """utm_content -> (edition id, its click_tracking) for the editions' donate links."""
    found: dict[str, tuple[int, str]] = {}
    listed = sorted(contents)
    for start in range(0, len(listed), 500):
        query = (select(EditionLink.utm_content, Edition.id, Edition.click_tracking)
                 .join(Edition, Edition.id == EditionLink.edition_id)
                 .where(EditionLink.kind == DONATE,
                        EditionLink.utm_content.in_(listed[start:start + 500]))
                 .order_by(Edition.id))
        for content, edition_id, tracking in session.execute(query):
            found.setdefault(content, (edition_id, tracking))
    return found


def _reader(session: Session, edition: tuple[int, str], email: str) -> int | None:
    """The subscriber who gave, for a per-reader edition they were sent; else None."""
    edition_id, tracking = edition
    if tracking != PER_READER or not email:
        return None
    try:
        address = normalise_email(email)
    except InvalidAddress:  # the address only ever links a gift; the gift still counts
        return None
    return session.scalar(
        select(Subscriber.id).join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Subscriber.email == address, Delivery.edition_id == edition_id,
               Delivery.state == DELIVERED))


def edition_gift_totals(session: Session, edition_id: int) -> tuple[int, dict[str, Decimal]]:
    """How many gifts the edition's donate link brought, and their sum in each currency."""
    query = (select(Gift.currency, func.count(), func.sum(Gift.amount_minor))
             .where(Gift.edition_id == edition_id).group_by(Gift.currency)
             .order_by(Gift.currency))
    count, totals = 0, {}
    for currency, n, minor in session.execute(query):
        count += n
        totals[currency] = Decimal(int(minor or 0)).scaleb(-2)
    return count, totals
