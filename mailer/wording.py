"""Counts in words, as staff read them: "1 subscriber", "1,004 subscribers"."""

from __future__ import annotations


def plural(n: int, one: str, many: str | None = None) -> str:
    """`n` and the noun in its number (`many` when adding "s" is wrong)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
