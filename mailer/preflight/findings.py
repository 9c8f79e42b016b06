"""What preflight reports: findings with a severity, gathered into one report per edition.

Kept apart from the checks so the runner, the checks and the link probe share one vocabulary
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailer.preflight.spamassassin import SpamRule

ERROR = "error"
WARNING = "warning"
DEFAULT_SPAM_THRESHOLD = 5.0


@dataclass(frozen=True)
class Finding:
    """One problem: `code` is stable (for tests and the console), `message` is for people."""

    severity: str  # ERROR | WARNING
    code: str
    message: str
    fix: str = ""  # what to do, exactly (a DNS record to publish), when there is one thing

    def line(self) -> str:
        return f"{self.severity}: {self.message} [{self.code}]"

    def as_json(self) -> dict[str, str]:
        data = {"severity": self.severity, "code": self.code, "message": self.message}
        if self.fix:
            data["fix"] = self.fix
        return data


@dataclass
class Report:
    """Everything preflight found about one edition."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    spam_score: float | None = None
    rules: list[SpamRule] = field(default_factory=list)
    spam_threshold: float = DEFAULT_SPAM_THRESHOLD
    checked_at: str = ""
    domain: dict[str, Any] | None = None  # the DNS check's passes (its findings are above)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def findings(self) -> list[Finding]:
        return self.errors + self.warnings

    def add(self, finding: Finding) -> None:
        (self.errors if finding.severity == ERROR else self.warnings).append(finding)

    def failure_line(self) -> str:
        """The one line `mailer send` prints when it refuses the edition."""
        first = self.errors[0].message if self.errors else "no error"
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return (f"preflight failed: {first}{more}; "
                'fix it or use --force --reason "..."')

    def as_json(self, *, forced: bool = False, reason: str = "") -> dict[str, Any]:
        """The shape stored in `Edition.preflight` (and shown by the staff console)."""
        return {
            "checked_at": self.checked_at,
            "errors": [_entry(f) for f in self.errors],
            "warnings": [_entry(f) for f in self.warnings],
            "spam_score": self.spam_score,
            "spam_threshold": self.spam_threshold,
            "rules": [{"name": r.name, "score": r.score, "description": r.description}
                      for r in self.rules],
            "forced": forced,
            "reason": reason,
            **({"domain": self.domain} if self.domain is not None else {}),
        }


def _entry(finding: Finding) -> dict[str, str]:
    entry = {"code": finding.code, "message": finding.message}
    if finding.fix:
        entry["fix"] = finding.fix
    return entry


def grouped(severity: str, code: str, label: str, items: list[str], why: str = "") -> Finding:
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    tail = f": {why}" if why else ""
    return Finding(severity, code, f"{label}: {short(items[0])}{more}{tail}")


def short(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
