"""Donation asks: several versions of the donation prompt, tested against each other.

Each edition shows every reader one ask, chosen by a stable hash of (reader, edition) when the
audience is snapshotted (`ledger.snapshot`), so the split is even, a reader sees one ask per
edition and a resumed send shows them the same one. An ask names its copy, the amount on its
button, the button's label and where it sits in the email; a paused ask is shown to nobody.
With no `donation_asks` configured there is one ask, made of the `donation_*` settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailer.errors import ConfigError

AFTER_LEAD, AFTER_THIRD, END = "after-lead", "after-third", "end"
POSITIONS = (AFTER_LEAD, AFTER_THIRD, END)
MAX_ASKS = 8
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_KEYS = {"name", "copy", "amount", "label", "position", "paused"}


@dataclass(frozen=True)
class DonationAsk:
    name: str  # in the donate link's utm_content, so gifts name the ask too
    copy: str
    amount: str
    label: str = "Donate"
    position: str = END
    paused: bool = False

    @property
    def button(self) -> str:
        """'Donate £10 a month'."""
        return f"{self.label} {self.amount}".strip()


def parse_asks(raw: Sequence[Mapping[str, Any]]) -> list[DonationAsk]:
    """The `donation_asks` setting as asks; ConfigError naming the first problem."""
    if len(raw) > MAX_ASKS:
        raise ConfigError(f"setting donation_asks: at most {MAX_ASKS} asks")
    asks: list[DonationAsk] = []
    for number, entry in enumerate(raw, start=1):
        where = f"setting donation_asks: ask {number}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table (name, copy, amount, ...)")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                              f"(known: {', '.join(sorted(_KEYS))})")
        name = str(entry.get("name", ""))
        if not NAME.fullmatch(name):
            raise ConfigError(f"{where}: name {name!r} must be a short name of letters, "
                              "digits, '.', '_' or '-'")
        if any(ask.name == name for ask in asks):
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        position = str(entry.get("position", END))
        if position not in POSITIONS:
            raise ConfigError(f"{where}: position {position!r} is not one of "
                              f"{', '.join(POSITIONS)}")
        copy, amount = str(entry.get("copy", "")).strip(), str(entry.get("amount", "")).strip()
        if not copy:
            raise ConfigError(f"{where}: copy must not be empty")
        paused = entry.get("paused", False)
        if not isinstance(paused, bool):
            raise ConfigError(f"{where}: paused must be true or false")
        asks.append(DonationAsk(name, copy, amount, str(entry.get("label", "Donate")).strip(),
                                position, paused))
    return asks


def live(asks: Sequence[DonationAsk]) -> list[DonationAsk]:
    """The asks shown: those not paused, or the first if all are."""
    shown = [ask for ask in asks if not ask.paused]
    return shown or list(asks[:1])
