"""The subscriber list: add, import, export, status changes, each recorded as an event.

Every status change goes through `set_status`, so the event trail (`mailer subscribers show`)
is complete whichever door the change came through: CLI, web, API, webhook or dispatch. The
same place writes the outgoing webhook event a change makes (`mailer.outbox`), in the same
transaction, so no door can change a reader without telling the systems that listen.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TypedDict

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailer import outbox
from mailer.choices import describe, joined, parse_frequency, parse_sections, split
from mailer.errors import MailerError
from mailer.models import (
    ACTIVE,
    DAILY,
    FAILED,
    HELD,
    PAUSED_SEND,
    PENDING,
    QUEUED,
    READY,
    SENDING,
    STATUSES,
    TESTING,
    WITHDRAWN,
    Delivery,
    Edition,
    Subscriber,
    SubscriberEvent,
    Suppression,
    utcnow,
)
from mailer.wording import plural

MAX_NAME = 200
MAX_FIRST_NAME = 100


class InvalidAddress(MailerError, ValueError):
    """The address is not a valid email address."""


def normalise_email(raw: str) -> str:
    """Validate syntax (no DNS) and return the canonical lower-case form."""
    text = (raw or "").strip()
    if not text or len(text) > 320 or any(c in text for c in "\r\n\0"):
        raise InvalidAddress(f"not a valid email address: {text[:80]!r}")
    try:
        # No SMTPUTF8: a non-ASCII local part cannot travel through most relays and APIs, so
        # it is refused at the door rather than failing at send time.
        info = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"not a valid email address: {text[:80]!r} ({exc})") from None
    return info.normalized.lower()


def clean_name(raw: str | None) -> str:
    """Names end up in headers and pages: no control characters, bounded length."""
    text = "".join(ch for ch in (raw or "") if ch.isprintable() or ch == " ")
    text = " ".join(text.split())
    if len(text) > MAX_NAME:
        raise MailerError(f"name is longer than {MAX_NAME} characters")
    return text


def clean_first_name(raw: str | None) -> str:
    """A first name for the greeting: a name's rules, and at most `MAX_FIRST_NAME`."""
    text = clean_name(raw)
    if len(text) > MAX_FIRST_NAME:
        raise MailerError(f"first name is longer than {MAX_FIRST_NAME} characters")
    return text


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_suppressed(session: Session, email: str) -> bool:
    return session.get(Suppression, email_hash(email)) is not None


def find(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email == email.strip().lower()))


def record_event(session: Session, sub: Subscriber, kind: str, *, source: str = "",
                 detail: str = "", at: datetime | None = None, new: bool = False) -> None:
    """Add to the reader's history, and queue the webhook event it makes (`new`: the row was
    just created, so "subscribed" is `subscriber.created`)."""
    event = SubscriberEvent(subscriber_id=sub.id, kind=kind, source=source, detail=detail[:2000])
    if at is not None:
        event.created_at = at
    session.add(event)
    hook = outbox.event_for(kind, new=new)
    if hook is not None:
        outbox.emit(session, hook, outbox.subscriber_data(sub, source=source, detail=detail),
                    subscriber_id=sub.id, at=at)


def set_choices(session: Session, sub: Subscriber, *, frequency: str | None = None,
                sections: Sequence[str] | None = None, source: str,
                at: datetime | None = None) -> bool:
    """Store already-parsed choices (`mailer.choices`); record the change in the reader's
    history. False when nothing changed. A send already under way keeps the sections it
    snapshotted; a reader who leaves its kind (daily for weekly, or back) is withdrawn from
    it if their copy has not gone yet."""
    new_frequency = sub.frequency if frequency is None else frequency
    new_sections = sub.sections if sections is None else joined(sections)
    if new_frequency == sub.frequency and new_sections == sub.sections:
        return False
    if new_frequency != sub.frequency and sub.id is not None:
        # A send of the kind they left that has not reached them yet: not theirs any more.
        withdraw_queued(session, sub.id, f"chose {new_frequency} during the send ({source})",
                        kind=sub.frequency)
    sub.frequency = new_frequency
    sub.sections = new_sections
    if at is not None:
        sub.updated_at = at
    record_event(session, sub, "choices-changed", source=source,
                 detail=describe(new_frequency, split(new_sections)), at=at)
    return True


def set_status(session: Session, sub: Subscriber, status: str, *, source: str,
               detail: str = "", at: datetime | None = None, event: str | None = None) -> bool:
    """Change status and record why; returns False when nothing changed (idempotent)."""
    if status not in STATUSES:
        raise MailerError(f"unknown status {status!r}")
    if sub.status == status:
        return False
    if sub.status == ACTIVE and sub.id is not None:
        withdraw_queued(session, sub.id, f"{status} during the send ({source})")
    sub.status = status
    if at is not None:
        sub.updated_at = at
    if status == ACTIVE and sub.confirmed_at is None:
        sub.confirmed_at = at
    kind = event or {
        "active": "confirmed" if source in ("confirm", "web") else "activated",
        "pending": "subscribed",
    }.get(status, status)
    record_event(session, sub, kind, source=source, detail=detail, at=at)
    return True


# Editions whose queued rows may still go out: about to start, sending, paused, or stopped and
# resumable.
UNFINISHED_EDITIONS = (READY, SENDING, TESTING, PAUSED_SEND, FAILED)


def withdraw_queued(session: Session, subscriber_id: int, why: str,
                    kind: str | None = None) -> int:
    """Take a reader who has just stopped receiving out of every send still under way.

    The audience is a snapshot: a send of 50,000 through a rate-limited relay can take an hour,
    and someone who unsubscribes at 07:05 must not get the edition at 07:40. Their queued rows
    become `withdrawn` and are never claimed. A claimed row is on its way and is left alone
    (the claim is the point of no return: a worker may be writing it to the server); a row
    held for the end of a subject test is withdrawn like a queued one. Through
    the unique (edition, subscriber) index, one look per unfinished edition. `kind` limits
    it to editions of that kind (a reader who moved to the weekly digest)."""
    editions = select(Edition.id).where(Edition.state.in_(UNFINISHED_EDITIONS))
    if kind is not None:
        editions = editions.where(Edition.kind == kind)
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id.in_(editions),
               Delivery.subscriber_id == subscriber_id,
               Delivery.state.in_((QUEUED, HELD)))
        .values(state=WITHDRAWN, error=why[:2000], permanent=True)
        .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def add(session: Session, email: str, *, name: str = "", status: str = ACTIVE,
        source: str = "cli", at: datetime | None = None, first_name: str = "",
        frequency: str = DAILY, sections: Sequence[str] = ()) -> tuple[Subscriber, bool]:
    """Add a subscriber; returns (subscriber, created). An existing address is left as it is."""
    address = normalise_email(email)
    if status not in STATUSES:
        raise MailerError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    existing = find(session, address)
    if existing is not None:
        return existing, False
    if is_suppressed(session, address):
        raise MailerError(f"{address} was erased or suppressed and cannot be re-added silently")
    sub = Subscriber(email=address, name=clean_name(name), status=status, source=source,
                     first_name=clean_first_name(first_name), frequency=frequency,
                     sections=joined(sections))
    if at is not None:
        sub.created_at = sub.updated_at = at
    if status == ACTIVE:
        sub.confirmed_at = at or sub.created_at
    session.add(sub)
    session.flush()
    record_event(session, sub, "subscribed" if status == PENDING else "added",
                 source=source, detail=f"status {status}", at=at, new=True)
    return sub, True


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        yield f"added {self.added}, already present {self.unchanged}, rejected {len(self.errors)}"
        for line, reason in self.errors:
            yield f"line {line}: {reason}"

    def sentence(self) -> str:
        """The outcome as staff read it: "Added 1,204 subscribers; 3 lines were not
        imported." """
        text = f"Added {plural(self.added, 'subscriber')}"
        if self.unchanged:
            text += f"; {plural(self.unchanged, 'was', 'were')} already on the list"
        if self.errors:
            text += f"; {plural(len(self.errors), 'line was', 'lines were')} not imported"
        return text + "."

    def merge(self, part: ImportReport) -> None:
        self.added += part.added
        self.unchanged += part.unchanged
        self.errors.extend(part.errors)


#: Rows per transaction in `import_csv_batched`. SQLite has one writer at a time: a batch holds
#: the lock for a few tens of milliseconds, so a confirmation click, a webhook or a send's
#: progress gets in between two batches instead of waiting for the whole file.
IMPORT_BATCH = 1000

#: What a spreadsheet takes for the start of a formula (OWASP's list for CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_cell(value: str) -> str:
    """A cell as export writes it: behind a `'` when a spreadsheet would run it as a formula.

    A cell that already is `'` and such a start (`'=x`, a name typed that way) gets one more
    `'`, so that `restore_cell` can always take exactly one off and give back what was stored."""
    return "'" + value if value.lstrip("'")[:1] in FORMULA_START else value


def restore_cell(value: str) -> str:
    """The inverse of `defuse_cell`: an address may start with `=`, and must come back so."""
    if value[:1] == "'" and value.lstrip("'")[:1] in FORMULA_START:
        return value[1:]
    return value


class NotText(MailerError, ValueError):
    """The file is not text in an encoding spreadsheets write (a picture, a zip, UTF-16)."""


#: Tried in order. Spreadsheets write CSV as UTF-8 (Excel's "CSV UTF-8", LibreOffice, Google
#: Sheets; often with a byte order mark, which utf-8-sig drops) or, Excel's "CSV (Comma
#: delimited)" on a British Windows PC, as Windows-1252. Nothing in the file says which.
#: Windows-1252 leaves five bytes undefined (81 8D 8F 90 9D); a file with one of them is
#: neither, and is refused rather than guessed at.
CSV_ENCODINGS = ("utf-8-sig", "cp1252")
#: C0 controls other than tab, LF and CR, and DEL: never in a spreadsheet's CSV, always in a
#: picture or an archive (which Windows-1252 would otherwise decode, byte for byte).
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CHUNK = 1 << 16
NOT_TEXT_MESSAGE = ("the file is not a text file in UTF-8 or Windows-1252: save it from the "
                    "spreadsheet as “CSV UTF-8”")


def csv_text(binary: IO[bytes]) -> IO[str]:
    """The file as text for `import_csv`, in the encoding it was written in; `NotText` if none.

    The whole file is read once to decide (a lone `é` may be on row 40,000) before anything is
    imported, so a file that is not text is refused whole. A stream that cannot seek (stdin)
    is first copied to a temporary file."""
    if not binary.seekable():
        spool = tempfile.SpooledTemporaryFile(max_size=_CHUNK * 16)  # noqa: SIM115
        shutil.copyfileobj(binary, spool)
        spool.seek(0)
        binary = spool
    start = binary.tell()
    for encoding in CSV_ENCODINGS:
        binary.seek(start)
        if _decodes(binary, encoding):
            binary.seek(start)
            return io.TextIOWrapper(binary, encoding=encoding, newline="")
    raise NotText(NOT_TEXT_MESSAGE)


def _decodes(binary: IO[bytes], encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        for chunk in iter(lambda: binary.read(_CHUNK), b""):
            if _NOT_TEXT.search(decoder.decode(chunk)):
                raise NotText(NOT_TEXT_MESSAGE)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class _Row:
    line: int
    address: str
    name: str
    status: str
    first_name: str = ""
    frequency: str = DAILY
    sections: tuple[str, ...] = ()


def _column(row: dict[str, str], *names: str) -> str:
    for name in names:
        for key, value in row.items():
            if key and key.strip().lower() == name:
                return restore_cell(value or "").strip()
    return ""


def _read_rows(stream: IO[str], report: ImportReport,
               known_sections: Sequence[str] = ()) -> Iterator[_Row]:
    """Rows worth a look in the database, in file order; bad lines go into `report`.

    Everything that needs no database happens here, outside any transaction: the CSV, the
    address syntax, the status, repeats within the file."""
    reader = csv.DictReader(stream)
    try:
        headers = {h.strip().lower() for h in (reader.fieldnames or []) if h}
    except csv.Error as exc:
        raise MailerError(f"the CSV header cannot be read: {exc}") from None
    if not headers & {"email", "email address"}:
        raise MailerError("CSV has no 'email' (or 'Email Address') column")
    seen: set[str] = set()
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit()
            report.errors.append((reader.line_num, f"the CSV cannot be read from here on: {exc}"))
            return
        line = reader.line_num
        if None in row:
            report.errors.append((line, "more fields than the header has"))
            continue
        # Ours (first_name), Mailchimp's export (First Name) and its merge tags (FNAME).
        first = _column(row, "first_name", "first name", "fname")
        name = _column(row, "name") or " ".join(
            p for p in (first, _column(row, "last_name", "last name", "lname")) if p)
        status = _column(row, "status").lower() or ACTIVE
        if status == "subscribed":  # Mailchimp's word
            status = ACTIVE
        checked = _checked(report, seen, line, _column(row, "email", "email address"),
                           name=name, status=status, first_name=first,
                           frequency=_column(row, "frequency"),
                           sections=_column(row, "sections"), known_sections=known_sections)
        if checked is not None:
            yield checked


def _checked(report: ImportReport, seen: set[str], position: int, email: str, *, name: str,
             status: str, first_name: str, frequency: str, sections: str | Sequence[str],
             known_sections: Sequence[str]) -> _Row | None:
    """One row's checks that need no database (address, status, choices, a repeat), or None
    with the reason in `report`."""
    try:
        address = normalise_email(email)
        if status not in STATUSES:
            raise MailerError(f"unknown status {status!r} (one of: {', '.join(STATUSES)}, "
                              "or Mailchimp's subscribed)")
        chosen_frequency = parse_frequency(frequency)
        chosen = parse_sections(sections, known_sections)
    except MailerError as exc:
        report.errors.append((position, str(exc)))
        return None
    if address in seen:
        report.unchanged += 1
        return None
    seen.add(address)
    return _Row(position, address, name, status, first_name, chosen_frequency, tuple(chosen))


def _batches(rows: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


class _NewSubscriber(TypedDict):
    """The values of one subscriber row `_store` inserts."""

    email: str
    name: str
    first_name: str
    frequency: str
    sections: str
    status: str
    source: str
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None


def _store(session: Session, rows: list[_Row], *, source: str,
           at: datetime | None) -> ImportReport:
    """Add the rows that are new, with the same rules as `add`, in a few statements.

    One query for the addresses already present, one for suppressed ones, one multi-row
    INSERT for the subscribers and one for their events: a row at a time (a savepoint, two
    lookups and a flush each) took 38 s for 50,000 rows."""
    part = ImportReport()
    hashes = {row.address: email_hash(row.address) for row in rows}
    present = set(session.scalars(select(Subscriber.email)
                                  .where(Subscriber.email.in_(list(hashes)))))
    suppressed = set(session.scalars(select(Suppression.email_hash)
                                     .where(Suppression.email_hash.in_(list(hashes.values())))))
    now = at or utcnow()
    new: list[_NewSubscriber] = []
    for row in rows:
        if row.address in present:
            part.unchanged += 1
            continue
        try:
            if hashes[row.address] in suppressed:
                raise MailerError(f"{row.address} was erased or suppressed and cannot be "
                                  "re-added silently")
            name = clean_name(row.name)
            first_name = clean_first_name(row.first_name)
        except MailerError as exc:
            part.errors.append((row.line, str(exc)))
            continue
        new.append({"email": row.address, "name": name, "first_name": first_name,
                    "frequency": row.frequency, "sections": joined(row.sections),
                    "status": row.status,
                    "source": source, "created_at": now, "updated_at": now,
                    "confirmed_at": now if row.status == ACTIVE else None})
    if new:
        ids = {email: sub_id for email, sub_id in session.execute(
            insert(Subscriber).returning(Subscriber.email, Subscriber.id), new)}
        session.execute(insert(SubscriberEvent), [
            {"subscriber_id": ids[values["email"]], "source": source, "created_at": now,
             "kind": "subscribed" if values["status"] == PENDING else "added",
             "detail": f"status {values['status']}"} for values in new])
        outbox.emit_many(session, outbox.SUBSCRIBER_CREATED, (
            (outbox.reader_data(id=ids[v["email"]], email=v["email"], status=v["status"],
                                name=v["name"], first_name=v["first_name"],
                                frequency=v["frequency"], sections=v["sections"],
                                source=source), ids[v["email"]]) for v in new), at=now)
    part.added = len(new)
    return part


@dataclass(frozen=True)
class NewReader:
    """One reader for `add_many`, as another system sends it (the API's batch)."""

    email: str
    name: str = ""
    first_name: str = ""
    frequency: str = ""
    sections: Sequence[str] = ()


def add_many(session: Session, readers: Sequence[NewReader], *, source: str,
             at: datetime | None = None, status: str = ACTIVE,
             known_sections: Sequence[str] = ()) -> ImportReport:
    """The import's checks and its few-statement store for readers given as data; a bad one
    is reported by its position (from 1) and skipped, as a bad line of a file is."""
    report, seen = ImportReport(), set[str]()
    rows = [row for position, reader in enumerate(readers, 1)
            if (row := _checked(report, seen, position, reader.email, name=reader.name,
                                status=status, first_name=reader.first_name,
                                frequency=reader.frequency, sections=reader.sections,
                                known_sections=known_sections)) is not None]
    report.merge(_store(session, rows, source=source, at=at))
    return report


def import_csv(session: Session, stream: IO[str], *, source: str = "import",
               at: datetime | None = None, sections: Sequence[str] = ()) -> ImportReport:
    """Import our own columns (email, name, status, first_name, frequency, sections) or a
    Mailchimp export's, in the caller's transaction (`import_csv_batched` for a real list).
    `sections` are the configured ones a row's ``News;Comment`` may name.

    A bad row is reported by its line number and skipped; good rows are kept. Rows without a
    status become active: an imported list is an existing, already-confirmed list.
    """
    report = ImportReport()
    for batch in _batches(_read_rows(stream, report, sections), IMPORT_BATCH):
        report.merge(_store(session, batch, source=source, at=at))
    report.errors.sort()
    return report


def import_csv_batched(sessions: sessionmaker[Session], stream: IO[str], *,
                       source: str = "import", at: datetime | None = None,
                       batch: int = IMPORT_BATCH, sections: Sequence[str] = ()) -> ImportReport:
    """`import_csv`, each batch of rows committed in its own short transaction.

    SQLite's write lock is taken per batch, not for the whole file, so everyone else's writes
    go on while 50,000 rows come in. An import that stops half way (the database went away)
    keeps the batches it committed; running it again adds the rest, as those rows are then
    already present. On PostgreSQL a sign-up of an address from the file can commit between
    the batch's lookup and its INSERT; the batch is then looked up again."""
    report = ImportReport()
    for rows in _batches(_read_rows(stream, report, sections), batch):
        report.merge(_commit(sessions, rows, source=source, at=at))
    report.errors.sort()
    return report


def _commit(sessions: sessionmaker[Session], rows: list[_Row], *, source: str,
            at: datetime | None, attempts: int = 3) -> ImportReport:
    while True:
        attempts -= 1
        try:
            with sessions.begin() as session:
                return _store(session, rows, source=source, at=at)
        except IntegrityError:
            if attempts <= 0:
                raise


EXPORT_COLUMNS = ("email", "name", "status", "created_at", "confirmed_at", "first_name",
                  "frequency", "sections")


def export_rows(session: Session, status: str | None = None) -> Iterator[list[str]]:
    """Rows for CSV export, streamed in id order (flat memory for large lists)."""
    query = select(Subscriber).order_by(Subscriber.id).execution_options(yield_per=1000)
    if status:
        query = query.where(Subscriber.status == status)
    for sub in session.scalars(query):
        yield [sub.email, sub.name, sub.status, sub.created_at.isoformat(),
               sub.confirmed_at.isoformat() if sub.confirmed_at else "", sub.first_name,
               sub.frequency, sub.sections]


def write_csv(rows: Iterable[list[str]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        # Defuse spreadsheet formulas in user-supplied fields (import restores them).
        writer.writerow([defuse_cell(v) for v in row])
        count += 1
    return count


def export_csv_text(session: Session, status: str | None = None) -> str:
    buf = io.StringIO()
    write_csv(export_rows(session, status), buf)
    return buf.getvalue()


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status))
    result = {status: 0 for status in STATUSES}
    result.update({status: n for status, n in rows})
    return result
