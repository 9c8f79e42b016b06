"""The web app (`mailer serve`): a Flask application factory in the shape of Flask's tutorial.

`create_app` wraps the same `App` (settings, clock, database) every other entry point builds,
so a page, a CLI command and the scheduler all see one configuration. Areas are blueprints,
registered here explicitly: `public` (the subscribers' pages), `hooks` (provider webhooks),
`staff` (the staff console) and `api` (the public API, with its OpenAPI document). The views
find the `App` through `mailer.web.context`, never by importing this module, so nothing imports
back into the factory.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIFlask
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from mailer.app import App
from mailer.config import BUNDLED_TEMPLATES
from mailer.web import api, hooks, preferences, public, security, staff
from mailer.web.context import EXTENSION_KEY
from mailer.web.redirects import ClickRedirects

#: Where `create_app` keeps the `ClickRedirects` (its link cache and click recorder).
CLICKS_KEY = "mailer.clicks"

API_SPEC = "/api/v1/openapi.json"
MAX_BODY = 64 * 1024  # forms are tiny; webhooks may raise this for their own routes


# The pages' own templates: always the bundled ones. The newsroom's `templates/` overrides
# email templates only (docs/operations.md), so a `templates/web/` there changes nothing here.
WEB_TEMPLATES = BUNDLED_TEMPLATES / "web"


def create_app(app: App | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app around `app` (built from the environment when not given).

    `test_config` overrides Flask configuration keys (TESTING, MAILER_SEND_INLINE,
    MAILER_RATE_LIMITS, ...) after the defaults are set.
    """
    app = app or App.create()
    folder = WEB_TEMPLATES
    # APIFlask is Flask with an OpenAPI generator: only the API's blueprint is described in the
    # document, and the site keeps its HTML error pages (json_errors off; the API's errors are
    # problem details, `mailer.web.problems`).
    web = APIFlask(__name__, template_folder=str(folder), static_folder=str(folder / "static"),
                   static_url_path="/static", title="LabourList mailer API", version="1",
                   spec_path=API_SPEC, docs_path=None, json_errors=False)
    web.config["OPENAPI_VERSION"] = "3.1.0"
    web.config["AUTO_SERVERS"] = False
    web.error_processor(api.problem_of)
    web.config.from_mapping(
        SECRET_KEY=app.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_BODY,
        # Send confirmation emails on a background thread, so a response takes as long for a
        # known address (no email) as for a new one: timing must not enumerate the list.
        MAILER_SEND_INLINE=False,
        MAILER_RATE_LIMITS=dict(public.DEFAULT_LIMITS),
    )
    if test_config:
        web.config.update(test_config)
    web.extensions[EXTENSION_KEY] = app

    proxies = int(web.config.get("MAILER_TRUSTED_PROXIES", app.settings.trusted_proxies) or 0)
    if proxies:
        # Behind nginx/a load balancer the peer is the proxy: take the client address from
        # X-Forwarded-For, trusting only as many hops as there are proxies we run. (Flask's
        # documented way to wrap the WSGI app: mypy sees it as assigning to a method.)
        web.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            web.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    # The click redirect and open pixel answer before everything else (the hot path:
    # mailer.web.redirects), reading the forwarded address with the same trust themselves.
    clicks = ClickRedirects(web.wsgi_app, app, trusted_proxies=proxies)
    web.extensions[CLICKS_KEY] = clicks
    web.wsgi_app = clicks  # type: ignore[method-assign]

    security.init_app(web, app.settings.base_url)
    web.register_blueprint(public.bp)
    web.register_blueprint(preferences.bp)
    public.register_error_pages(web)
    web.register_blueprint(hooks.bp)
    web.register_blueprint(staff.bp)
    web.register_blueprint(api.bp)
    for blueprint in web.blueprints.values():
        # Left out of the OpenAPI document (APIFlask reads this flag on every blueprint).
        if not hasattr(blueprint, "enable_openapi"):
            blueprint.enable_openapi = False  # type: ignore[attr-defined]
    return web
