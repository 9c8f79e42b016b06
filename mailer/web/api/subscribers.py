"""`/api/v1/subscribers`: the list through the same domain code as the form, the CSV import
and the console, so the same validation, suppression and withdrawal rules hold.

A reader is named in the URL by id or by address (`/subscribers/42`,
`/subscribers/reader@example.com`). Creating is double opt-in unless the caller says the site
already confirmed the address (`"confirmed": true`), which is recorded in the reader's
history as consent given through the key, by name. Someone who left the list is never put
back without a confirmation email, and an erased or suppressed address is refused.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import audit, optin
from mailer.choices import InvalidChoice, parse_frequency, parse_sections, split
from mailer.erasure import erase
from mailer.models import ACTIVE, PENDING, Subscriber
from mailer.subscribers import (
    InvalidAddress,
    NewReader,
    add,
    add_many,
    find,
    is_suppressed,
    normalise_email,
    record_event,
    set_choices,
    set_status,
)
from mailer.web.api.base import about_subscriber, actor, bp, current_key, error, idempotent, scoped
from mailer.web.api.schemas import (
    BatchIn,
    BatchOut,
    SubscriberIn,
    SubscriberOut,
    SubscriberPage,
    SubscriberPatch,
    SubscriberQuery,
    UnsubscribeIn,
)
from mailer.web.context import mailer_app
from mailer.web.public import in_background


def subscriber_json(sub: Subscriber) -> dict[str, Any]:
    return {"id": sub.id, "email": sub.email, "status": sub.status, "name": sub.name,
            "first_name": sub.first_name, "frequency": sub.frequency,
            "sections": split(sub.sections), "source": sub.source,
            "created_at": sub.created_at, "confirmed_at": sub.confirmed_at,
            "updated_at": sub.updated_at}


def _invalid(field: str, message: str) -> Exception:
    return error(422, f"{field}: {message}", errors={"json": {field: [message]}})


def _lookup(session: Session, ref: str) -> Subscriber:
    sub = find(session, ref) if "@" in ref else (
        session.get(Subscriber, int(ref)) if ref.isdigit() and len(ref) < 12 else None)
    if sub is None:
        raise error(404, "no subscriber with that id or address")
    about_subscriber(sub.id)
    return sub


def _choices(body: dict[str, Any]) -> tuple[str | None, list[str] | None]:
    try:
        frequency = parse_frequency(body["frequency"]) if body.get("frequency") else None
        sections = (parse_sections(body["sections"], mailer_app().settings.sections)
                    if body.get("sections") is not None else None)
    except InvalidChoice as exc:
        raise _invalid("sections" if "section" in str(exc) else "frequency", str(exc)) from None
    return frequency, sections


@bp.get("/subscribers")
@scoped("subscribers:read")
@bp.input(SubscriberQuery, location="query", arg_name="query")
@bp.output(SubscriberPage)
def list_subscribers(query: dict[str, Any]) -> dict[str, Any]:
    """List subscribers, oldest first, a page at a time (cursor pagination)."""
    after = 0
    if query.get("cursor"):
        try:
            after = int(base64.urlsafe_b64decode(query["cursor"].encode()).decode())
        except ValueError:
            raise error(400, "cursor is not one this API gave") from None
    limit = query["limit"]
    pick = select(Subscriber).where(Subscriber.id > after).order_by(Subscriber.id)
    if query.get("status"):
        pick = pick.where(Subscriber.status == query["status"])
    with mailer_app().sessions() as session:
        rows = list(session.scalars(pick.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (base64.urlsafe_b64encode(str(rows[-1].id).encode()).decode()
              if more and rows else None)
    return {"data": [subscriber_json(sub) for sub in rows], "next_cursor": cursor}


@bp.post("/subscribers")
@scoped("subscribers:write")
@idempotent
@bp.input(SubscriberIn, arg_name="body")
@bp.output(SubscriberOut, status_code=201, description="Created (200: already there)")
def create_subscriber(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Add a reader: double opt-in unless `confirmed` (see the docs for who may say so)."""
    app = mailer_app()
    try:
        address = normalise_email(body["email"])
    except InvalidAddress as exc:
        raise _invalid("email", str(exc)) from None
    frequency, sections = _choices(body)
    now, source = app.clock.now(), actor()
    request = None
    with app.sessions.begin() as session:
        if is_suppressed(session, address):
            raise error(409, "this address was erased or suppressed and cannot be added again "
                             "through the API", slug="suppressed")
        existing = find(session, address)
        try:
            if body["confirmed"]:
                sub, created = _add_confirmed(session, existing, address, body, frequency,
                                              sections, source=source, now=now)
            else:
                request = optin.request_subscription(
                    session, address, body["name"], now=now, source=source,
                    frequency=frequency, sections=sections)
                found, created = find(session, address), existing is None
                assert found is not None
                sub = found
        except optin.InvalidName as exc:
            raise _invalid("name", str(exc)) from None
        if created and body.get("first_name") is not None:
            sub.first_name = body["first_name"].strip()
        session.flush()
        about_subscriber(sub.id)
        result = subscriber_json(sub)
    if request is not None:
        in_background("api-confirmation", optin.send_confirmation, request)
    return result, 201 if created else 200, {"Location": f"/api/v1/subscribers/{result['id']}"}


def _add_confirmed(session: Session, existing: Subscriber | None, address: str,
                   body: dict[str, Any], frequency: str | None, sections: list[str] | None,
                   *, source: str, now: Any) -> tuple[Subscriber, bool]:
    consent = f"consent given to the site, confirmed through API key {current_key().name}"
    if existing is None:
        name = optin.validate_name(body["name"])
        sub, _ = add(session, address, name=name, status=ACTIVE, source=source, at=now,
                     first_name=name, frequency=frequency or "daily", sections=sections or ())
        record_event(session, sub, "consent", source=source, detail=consent, at=now)
        return sub, True
    if existing.status == PENDING:
        set_status(session, existing, ACTIVE, source=source, at=now, event="confirmed",
                   detail=consent)
        set_choices(session, existing, frequency=frequency, sections=sections, source=source,
                    at=now)
        return existing, False
    if existing.status in optin.LEFT:
        raise error(409, f"this reader left the list ({existing.status}); they come back only "
                         "by confirming again: send \"confirmed\": false", slug="left-the-list")
    return existing, False


@bp.post("/subscribers/batch")
@scoped("subscribers:write")
@idempotent
@bp.input(BatchIn, arg_name="body")
@bp.output(BatchOut)
def create_many(body: dict[str, Any]) -> dict[str, Any]:
    """Add up to 1,000 already-confirmed readers in one request (a CRM's sync), through the
    CSV import's checks and store; bad entries are reported by index and skipped."""
    app = mailer_app()
    readers = [NewReader(r["email"], r["name"], r["first_name"], r["frequency"],
                         r["sections"]) for r in body["subscribers"]]
    with app.sessions.begin() as session:
        report = add_many(session, readers, source=actor(), at=app.clock.now(),
                          known_sections=app.settings.sections)
    return {"added": report.added, "unchanged": report.unchanged,
            "errors": [{"index": n - 1, "error": why} for n, why in report.errors]}


@bp.get("/subscribers/<ref>")
@scoped("subscribers:read")
@bp.output(SubscriberOut)
def get_subscriber(ref: str) -> dict[str, Any]:
    """One reader, by id or address."""
    with mailer_app().sessions() as session:
        return subscriber_json(_lookup(session, ref))


@bp.patch("/subscribers/<ref>")
@scoped("subscribers:write")
@bp.input(SubscriberPatch, arg_name="body")
@bp.output(SubscriberOut)
def update_subscriber(ref: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change a reader's name, first name, frequency or sections."""
    app = mailer_app()
    frequency, sections = _choices(body)
    now, source = app.clock.now(), actor()
    with app.sessions.begin() as session:
        sub = _lookup(session, ref)
        try:
            if "first_name" in body:
                optin.change_name(session, sub, body["first_name"], now=now, source=source)
            if "name" in body:
                clean = optin.validate_name(body["name"])
                if clean != sub.name:
                    sub.name, sub.updated_at = clean, now
                    record_event(session, sub, "name-changed", source=source, at=now)
        except optin.InvalidName as exc:
            raise _invalid("name", str(exc)) from None
        set_choices(session, sub, frequency=frequency, sections=sections, source=source,
                    at=now)
        session.flush()
        return subscriber_json(sub)


@bp.post("/subscribers/<ref>/unsubscribe")
@scoped("subscribers:write")
@idempotent
@bp.input(UnsubscribeIn, arg_name="body")
@bp.output(SubscriberOut)
def unsubscribe_subscriber(ref: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stop all email to a reader at once (taken out of any send under way)."""
    app = mailer_app()
    with app.sessions.begin() as session:
        sub = _lookup(session, ref)
        reason = optin.clean_reason(body["reason"])
        optin.unsubscribe(session, sub, now=app.clock.now(), source=actor(), detail=reason)
        session.flush()
        return subscriber_json(sub)


@bp.delete("/subscribers/<ref>")
@scoped("subscribers:write")
@bp.output({}, status_code=204)
def erase_subscriber(ref: str) -> tuple[str, int]:
    """Erase a reader and every copy of their address we keep (a hash stays, so they are
    not added back silently)."""
    app = mailer_app()
    with app.sessions.begin() as session:
        result = erase(session, _lookup(session, ref), at=app.clock.now())
        audit.record(session, actor(), "subscriber-erased",
                     audit.subscriber_target(result.subscriber_id), "through the API",
                     at=app.clock.now())
    return "", 204
