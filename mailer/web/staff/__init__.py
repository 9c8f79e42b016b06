"""The staff console under /staff: one blueprint, its views registered here.

`auth` holds the blueprint, the session checks and the helpers every page shares; the view
modules import it and it imports none of them. Importing this package registers every view on
`bp`, which `mailer.web.create_app` then registers on the app.
"""

from mailer.web.staff import (  # noqa: F401
    admin,
    audience,
    dashboard,
    editions,
    experiments,
    integrations,
    reports,
    subscribers,
    team,
)
from mailer.web.staff.auth import bp

__all__ = ["bp"]
