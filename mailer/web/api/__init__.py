"""The public API under /api/v1 (docs/api.md): subscribers and editions, for the site, the
CRM and the donations platform. `base` holds the blueprint and what every view shares; the
view modules register on it when this package is imported."""

from mailer.web.api import editions, subscribers  # noqa: F401
from mailer.web.api.base import bp, problem_of

__all__ = ["bp", "problem_of"]
