"""Readers' choices: how often (daily or the weekly digest) and which sections.

One place says what a valid choice is, for every door (the sign-up form, the preferences and
unsubscribe pages, `mailer subscribers add`, CSV imports): section names are matched to the
configured `sections` without regard to case, an unknown one is refused by name, and choosing
every section is stored as "all" (an empty list), so a section added to the configuration
later reaches the readers who wanted everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.errors import MailerError
from mailer.models import ACTIVE, DAILY, FREQUENCIES, WEEKLY, Subscriber


class InvalidChoice(MailerError):
    """A frequency or section that is not on offer; the message names it."""


def parse_frequency(raw: str) -> str:
    value = (raw or "").strip().lower() or DAILY
    if value not in FREQUENCIES:
        raise InvalidChoice(f"unknown frequency {raw!r} (daily or weekly)")
    return value


def parse_sections(raw: str | Iterable[str], configured: Sequence[str]) -> list[str]:
    """Section names from `raw` ("News;Comment" or a list), in the configured order and
    spelling; [] for all of them (or none given)."""
    names = raw.split(";") if isinstance(raw, str) else list(raw)
    wanted = [name.strip() for name in names if name and name.strip()]
    by_key = {name.casefold(): name for name in configured}
    unknown = [name for name in wanted if name.casefold() not in by_key]
    if unknown:
        offered = ", ".join(configured) or "none are configured"
        raise InvalidChoice(f"unknown section {unknown[0]!r} (sections: {offered})")
    chosen = {name.casefold() for name in wanted}
    if not chosen or chosen == set(by_key):
        return []
    return [name for name in configured if name.casefold() in chosen]


def joined(sections: Sequence[str]) -> str:
    """How chosen sections are stored (`Subscriber.sections`): ";"-joined, "" for all."""
    return ";".join(sections)


def split(stored: str) -> list[str]:
    """The chosen sections of a stored value; [] for all."""
    return [name for name in stored.split(";") if name]


def describe(frequency: str, sections: Sequence[str]) -> str:
    """'daily, all sections' / 'weekly, News and Comment': for histories and pages."""
    if not sections:
        what = "all sections"
    elif len(sections) == 1:
        what = sections[0]
    else:
        what = ", ".join(sections[:-1]) + " and " + sections[-1]
    return f"{frequency}, {what}"


@dataclass(frozen=True)
class Breakdown:
    """The active readers by their choices, for the console."""

    daily: int = 0
    weekly: int = 0
    all_sections: int = 0  # chose every section (or never chose)
    #: per configured section: readers who get it (all sections, or chose it)
    per_section: dict[str, int] = field(default_factory=dict)
    #: each distinct choice of some sections, as stored, with its readers
    combinations: list[tuple[str, int]] = field(default_factory=list)


def breakdown(session: Session, configured: Sequence[str]) -> Breakdown:
    """Active readers by frequency and by sections, in one grouped query: each distinct
    stored choice is counted once, then spread over the sections it names."""
    rows = session.execute(
        select(Subscriber.frequency, Subscriber.sections, func.count())
        .where(Subscriber.status == ACTIVE)
        .group_by(Subscriber.frequency, Subscriber.sections)).all()
    by_frequency: Counter[str] = Counter()
    by_choice: Counter[str] = Counter()
    for frequency, stored, n in rows:
        by_frequency[frequency] += n
        by_choice[stored] += n
    names = {name.casefold(): name for name in configured}
    every = by_choice.pop("", 0)
    per_section = dict.fromkeys(configured, every)
    for stored, n in by_choice.items():
        for name in split(stored):
            if name.casefold() in names:
                per_section[names[name.casefold()]] += n
    return Breakdown(daily=by_frequency[DAILY], weekly=by_frequency[WEEKLY],
                     all_sections=every, per_section=per_section,
                     combinations=sorted(by_choice.items(), key=lambda item: -item[1]))
