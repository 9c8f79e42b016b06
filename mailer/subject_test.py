"""Subject tests: which subject line gets the morning's email read, decided inside the send.

Before the send time (`test_minutes` ahead) the edition's own subject and each challenger go
to a random `test_share` of the audience each; the rest of the audience is held in the
ledger. At the send time the groups' human click rates are compared and the winner goes to
everyone held. Every part runs through the ordinary ledger, so exactly once, pauses and
crash recovery hold for the groups and for the rest alike.

What is compared is the share of each group's delivered readers who clicked something a
reader can click (stories, donate, sign-up, archive), counted without naming anyone: in
aggregate mode, distinct scanner-filtered click fingerprints (a salted daily hash of address
and browser, `mailer.clicks.fingerprint`; within the hour of a test it stands for one
reader), in per-reader mode distinct deliveries. The rule is conservative on purpose: a
challenger wins only when a one-sided two-proportion z-test says it beats the edition's own
subject at p < 0.05, shared among the challengers (Bonferroni); otherwise the edition's own
subject goes out, which costs nothing against not testing. `docs/subject-test.md` gives the
power of the test for audiences of LabourList's size.

A group must hold at least `MIN_GROUP` readers, so that a group's clicks say nothing about
any one reader and the figures mean something; a smaller audience is not tested.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select, update
from sqlalchemy.orm import Session

from mailer import audit, ledger
from mailer.config import Settings
from mailer.models import (
    ARCHIVE,
    ARTICLE,
    DELIVERED,
    DONATE,
    HUMAN,
    SENDING,
    SIGNUP,
    TESTING,
    WEEKLY,
    Click,
    Delivery,
    Edition,
    EditionLink,
)
from mailer.render import EditionView, subject_line

MIN_GROUP = 50
ALPHA = 0.05
#: The challenger when the settings name none: the lead story's headline.
LEAD_TEMPLATE = "{lead_title}"
RULE = ("one-sided two-proportion z-test of each subject's human click rate against the "
        "edition's own subject, p < 0.05 shared among the challengers (Bonferroni); "
        "otherwise the edition's own subject")
CLICKABLE = (ARTICLE, DONATE, SIGNUP, ARCHIVE)
# Record states (`Edition.subject_test["state"]`).
TESTING_STATE, DECIDED, NOT_RUN = "testing", "decided", "not-run"
# `Edition.click_tracking` values (`mailer.clicks.links`, which imports the report that
# imports this module).
OFF, PER_READER = "off", "per-reader"


@dataclass(frozen=True)
class Group:
    """One subject's test group, as measured at the decision."""

    group: int
    subject: str
    readers: int   # in the group
    sent: int      # delivered
    clickers: int  # distinct human clickers (see the module's docstring)

    @property
    def rate(self) -> float:
        return min(self.clickers, self.sent) / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Decision:
    winner: int  # the group whose subject goes to the rest (1: the edition's own)
    reason: str
    p_values: dict[int, float]


def planned_templates(settings: Settings, edition: Edition | None) -> list[str]:
    """The challengers' subject templates for `edition`: the ones staff set on it, else the
    settings' when `subject_test` is on. Empty: no test. The weekly digest is not tested."""
    if edition is not None and edition.kind == WEEKLY:
        return []
    if edition is not None and edition.subject_variants:
        return list(edition.subject_variants)
    if settings.subject_test:
        return list(settings.subject_variants) or [LEAD_TEMPLATE]
    return []


def subjects_for(edition: Edition, view: EditionView, templates: Sequence[str]) -> list[str]:
    """The subject lines of the test: the edition's own first, then each challenger as this
    edition fills it, repeats dropped. Fewer than two lines: nothing to test."""
    stories = len(view.articles)
    lines = [edition.subject]
    for template in templates:
        line = subject_line(template, edition.edition_date, view.lead, stories)
        if line and line not in lines:
            lines.append(line)
    return lines if len(lines) > 1 else []


def why_not(settings: Settings, edition: Edition, audience: int, groups: int) -> str:
    """Why a planned test cannot run on this edition ("" when it can)."""
    if edition.click_tracking == OFF:
        return "click tracking is off (click_tracking), so nothing could be measured"
    size = group_size(audience, settings.test_share)
    if size < MIN_GROUP:
        return (f"{audience} readers give {size} a group at test_share "
                f"{settings.test_share:g}; a test needs at least {MIN_GROUP} in each of "
                f"its {groups} groups")
    return ""


def group_size(audience: int, share: float) -> int:
    return int(audience * share)


def start(session: Session, edition: Edition, subjects: list[str], settings: Settings,
          now: datetime, rng: random.Random | None = None) -> dict[str, Any]:
    """Split the snapshotted audience into the test groups and hold the rest, in the
    caller's transaction; the record stored on the edition."""
    audience = session.scalar(select(func.count()).where(Delivery.edition_id == edition.id)) or 0
    size = group_size(audience, settings.test_share)
    sizes = ledger.hold_for_test(session, edition.id, len(subjects), size,
                                 rng or random.SystemRandom())
    record = {"state": TESTING_STATE, "subjects": subjects, "share": settings.test_share,
              "group_sizes": sizes, "audience": audience, "started_at": now.isoformat(),
              "rule": RULE}
    edition.subject_test = record
    return record


def not_run(edition: Edition, reason: str) -> dict[str, Any]:
    """Record on `edition` that its planned test did not run, and why (kept if already)."""
    if edition.subject_test.get("state") != NOT_RUN:
        edition.subject_test = {"state": NOT_RUN, "reason": reason, "rule": RULE}
    return edition.subject_test


def figures(session: Session, edition: Edition) -> list[Group]:
    """Each group's readers, deliveries and distinct human clickers, from the ledger and the
    click table (one query each)."""
    subjects: list[str] = list(edition.subject_test.get("subjects", []))
    readers: Counter[int] = Counter()
    sent: Counter[int] = Counter()
    for variant, state, n in session.execute(
            select(Delivery.variant, Delivery.state, func.count())
            .where(Delivery.edition_id == edition.id,
                   Delivery.variant.contains(ledger.GROUP_MARK, autoescape=True))
            .group_by(Delivery.variant, Delivery.state)):
        group = ledger.test_group_of(variant)
        readers[group] += n
        if state == DELIVERED:
            sent[group] += n
    who = Click.delivery_id if edition.click_tracking == PER_READER else Click.fingerprint
    clickable = select(EditionLink.position).where(EditionLink.edition_id == edition.id,
                                                   EditionLink.kind.in_(CLICKABLE))
    clickers = {group: n for group, n in session.execute(
        select(Click.test_group, func.count(distinct(who)))
        .where(Click.edition_id == edition.id, Click.test_group > 0, Click.verdict == HUMAN,
               Click.position.in_(clickable))
        .group_by(Click.test_group))}
    return [Group(i, subject, readers[i], sent[i], clickers.get(i, 0))
            for i, subject in enumerate(subjects, start=1)]


def one_sided_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """P(a difference at least this large in favour of the second proportion | both equal):
    the pooled two-proportion z-test, one-sided."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 1.0 if x2 / n2 <= x1 / n1 else 0.0
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


def decide(groups: Sequence[Group], alpha: float = ALPHA) -> Decision:
    """The winner by `RULE`, with the reason in words a newsroom can read."""
    control, challengers = groups[0], list(groups[1:])
    if not challengers:
        return Decision(1, "only one subject line: nothing to compare", {})
    threshold = alpha / len(challengers)
    p_values = {g.group: one_sided_p(min(control.clickers, control.sent), control.sent,
                                     min(g.clickers, g.sent), g.sent) for g in challengers}
    better = [g for g in challengers if p_values[g.group] < threshold]
    line = "; ".join(f"{_pct(g.rate)} of {g.sent} (p={p_values[g.group]:.3f})"
                     for g in challengers)
    base = f"the edition's own subject {_pct(control.rate)} of {control.sent}; others {line}"
    if not better:
        return Decision(1, f"no subject beat the edition's own at p < {threshold:.3g}: "
                        f"{base}", p_values)
    best = max(better, key=lambda g: (g.rate, -g.group))
    return Decision(best.group, f"subject {best.group} beat the edition's own at "
                    f"p={p_values[best.group]:.4f} < {threshold:.3g}: {base}", p_values)


def finish(session: Session, edition: Edition, now: datetime, actor: str = "mailer") -> Decision:
    """Decide a test whose groups are out, in the caller's transaction: the winning subject
    becomes the edition's, the held rows are queued, the edition sends again, and the
    decision goes into the record and the audit log."""
    groups = figures(session, edition)
    decision = decide(groups)
    record = dict(edition.subject_test)
    record.update(state=DECIDED, decided_at=now.isoformat(), winner=decision.winner,
                  subject=groups[decision.winner - 1].subject, reason=decision.reason,
                  groups=[asdict(g) | {"rate": round(g.rate, 5),
                                       "p_value": decision.p_values.get(g.group)}
                          for g in groups])
    edition.subject_test = record
    edition.subject = groups[decision.winner - 1].subject
    ledger.release_held(session, edition.id)
    session.execute(update(Edition).where(Edition.id == edition.id, Edition.state == TESTING)
                    .values(state=SENDING))
    audit.record(session, actor, "subject-test-decided", audit.edition_target(
        edition.edition_date), f"winner {decision.winner}: {edition.subject!r}; "
        f"{decision.reason}", at=now)
    return decision


def summary(edition: Edition, session: Session | None = None) -> dict[str, Any] | None:
    """The test as `mailer editions stats --json` and the edition page show it: the record,
    with live group figures while it runs; None when the edition had no test planned."""
    record = dict(edition.subject_test or {})
    if not record:
        return None
    if record.get("state") == TESTING_STATE and session is not None:
        record["groups"] = [asdict(g) | {"rate": round(g.rate, 5)}
                            for g in figures(session, edition)]
    return record


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"
