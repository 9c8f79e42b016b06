"""The API's request and response shapes (marshmallow, through APIFlask), which the OpenAPI
document at /api/v1/openapi.json is generated from."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, DateTime, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range

from mailer.models import FREQUENCIES, STATUSES

MAX_PAGE = 200


class SubscriberIn(Schema):
    email = String(required=True, validate=Length(1, 320),
                   metadata={"description": "The reader's address (checked as the form does)."})
    name = String(load_default="", validate=Length(0, 200))
    first_name = String(load_default=None, validate=Length(0, 100),
                        metadata={"description": "For the greeting; defaults to `name`."})
    frequency = String(load_default=None, validate=OneOf(FREQUENCIES))
    sections = List(String(), load_default=None,
                    metadata={"description": "Configured section names; [] for all."})
    confirmed = Boolean(load_default=False, metadata={
        "description": "true: the site already confirmed the address (recorded as consent "
                       "given through this key); false: a confirmation email goes out."})


MAX_BATCH = 1000


class BatchReader(Schema):
    email = String(required=True, validate=Length(1, 320))
    name = String(load_default="", validate=Length(0, 200))
    first_name = String(load_default="", validate=Length(0, 100))
    frequency = String(load_default="", validate=OneOf(("", *FREQUENCIES)))
    sections = List(String(), load_default=list)


class BatchIn(Schema):
    subscribers = List(Nested(BatchReader), required=True, validate=Length(1, MAX_BATCH))
    confirmed = Boolean(required=True, validate=OneOf((True,)), metadata={
        "description": "Must be true: a batch is a list the site or CRM already confirmed "
                       "(as a CSV import is); new readers who should confirm are created "
                       "one by one."})


class BatchError(Schema):
    index = Integer(metadata={"description": "Position in `subscribers`, from 0."})
    error = String()


class BatchOut(Schema):
    added = Integer()
    unchanged = Integer()
    errors = List(Nested(BatchError))


class SubscriberPatch(Schema):
    name = String(validate=Length(0, 200))
    first_name = String(validate=Length(0, 100))
    frequency = String(validate=OneOf(FREQUENCIES))
    sections = List(String())


class UnsubscribeIn(Schema):
    reason = String(load_default="", validate=Length(0, 500))


class SubscriberOut(Schema):
    id = Integer()
    email = String()
    status = String(metadata={"enum": list(STATUSES)})
    name = String()
    first_name = String()
    frequency = String(metadata={"enum": list(FREQUENCIES)})
    sections = List(String())
    source = String()
    created_at = DateTime()
    confirmed_at = DateTime(allow_none=True)
    updated_at = DateTime()


class SubscriberItem(SubscriberOut):
    """A subscriber in a list (its own name in the document: apispec registers a schema used
    both alone and nested once per use)."""


class SubscriberQuery(Schema):
    status = String(validate=OneOf(STATUSES))
    cursor = String()
    limit = Integer(load_default=50, validate=Range(1, MAX_PAGE))


class SubscriberPage(Schema):
    data = List(Nested(SubscriberItem))
    next_cursor = String(allow_none=True, metadata={
        "description": "Pass as `cursor` for the next page; null on the last one."})


class EditionOut(Schema):
    id = Integer()
    date = String()
    kind = String()
    state = String()
    subject = String()
    audience = Integer()
    sent_count = Integer()
    failed_count = Integer()
    created_at = DateTime()
    started_at = DateTime(allow_none=True)
    finished_at = DateTime(allow_none=True)
    url = String(metadata={"description": "This resource."})
    stats = Dict(allow_none=True, metadata={
        "description": "Click figures and spam complaints (`complaints`, `complaint_rate`, "
                       "`complaint_level`: ok, alert above 0.1%, error above 0.3%), as "
                       "`mailer editions stats --json`, with the stats:read scope, once the "
                       "edition went out."})


class EditionItem(EditionOut):
    """An edition in a list (see `SubscriberItem`)."""


class EditionQuery(Schema):
    kind = String(load_default="daily", validate=OneOf(("daily", "weekly")))
    limit = Integer(load_default=30, validate=Range(1, MAX_PAGE))


class EditionKind(Schema):
    kind = String(load_default="daily", validate=OneOf(("daily", "weekly")))


class PreviewQuery(EditionKind):
    format = String(load_default="html", validate=OneOf(("html", "text")))


class EditionPage(Schema):
    data = List(Nested(EditionItem))


class TestIn(Schema):
    to = List(String(validate=Length(1, 320)), required=True, validate=Length(1, 10))


class SendIn(Schema):
    reason = String(load_default="", validate=Length(0, 500), metadata={
        "description": "Needed to send an edition the preflight refused or that is late."})


class Outcome(Schema):
    status = String()
    message = String()
    url = String()
