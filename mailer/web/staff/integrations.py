"""Console pages for admins: API keys and outgoing webhooks (docs/api.md, docs/webhooks.md).

The same domain calls as `mailer api-keys` and `mailer webhooks`, each change in the audit
log under the admin's name. A new key or a new receiver's signing secret is shown once, on
the page the POST answers with (never in a redirect's URL or the session): reload it and it
is gone.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from mailer import apikeys
from mailer.errors import MailerError
from mailer.outbox import EVENT_TYPES
from mailer.outgoing import endpoints
from mailer.web.context import mailer_app
from mailer.web.staff.auth import actor, admin_required, bp, record


def _page(status: int = 200, **shown: Any) -> tuple[str, int]:
    app = mailer_app()
    with app.sessions() as db:
        keys = apikeys.listing(db)
        hooks = endpoints.listing(db)
        db.expunge_all()
    return render_template("staff/integrations.html", title="API and webhooks", keys=keys,
                           hooks=hooks, scopes=apikeys.SCOPES, events=EVENT_TYPES,
                           **shown), status


@bp.route("/integrations", methods=["GET"])
@admin_required
def integrations() -> Any:
    return _page()


@bp.route("/integrations/keys", methods=["POST"])
@admin_required
def add_key() -> Any:
    app = mailer_app()
    name = request.form.get("name", "")
    try:
        with app.sessions.begin() as db:
            row, key = apikeys.create(db, name, request.form.getlist("scope"),
                                      actor=actor(), now=app.clock.now())
            record(db, "api-key-added", f"api-key:{row.name}", "scopes " + " ".join(row.scopes))
    except MailerError as exc:
        return _page(400, error=str(exc))
    return _page(new_key=key, new_key_name=name.strip())


@bp.route("/integrations/keys/<int:key_id>/revoke", methods=["POST"])
@admin_required
def revoke_key(key_id: int) -> Response:
    app = mailer_app()
    with app.sessions.begin() as db:
        names = {row.id: row.name for row in apikeys.listing(db)}
        if key_id in names:
            apikeys.revoke(db, names[key_id], now=app.clock.now())
            record(db, "api-key-revoked", f"api-key:{names[key_id]}")
            flash(f"API key {names[key_id]} revoked: its next request is refused.")
    return redirect(url_for("staff.integrations"), code=303)


@bp.route("/integrations/webhooks", methods=["POST"])
@admin_required
def add_webhook() -> Any:
    app = mailer_app()
    try:
        with app.sessions.begin() as db:
            row = endpoints.add(db, request.form.get("url", ""), request.form.getlist("event"),
                                app.settings, description=request.form.get("description", ""),
                                now=app.clock.now())
            record(db, "webhook-added", f"webhook:{row.id}",
                   f"{row.url} ({', '.join(row.events)})")
            secret, url = row.secret, row.url
    except MailerError as exc:
        return _page(400, error=str(exc))
    return _page(new_secret=secret, new_secret_url=url)


@bp.route("/integrations/webhooks/<int:endpoint_id>/<any(enable, disable, remove):action>",
          methods=["POST"])
@admin_required
def change_webhook(endpoint_id: int, action: str) -> Response:
    app = mailer_app()
    try:
        with app.sessions.begin() as db:
            url = endpoints.get(db, endpoint_id).url
            if action == "remove":
                endpoints.remove(db, endpoint_id)
            else:
                endpoints.set_enabled(db, endpoint_id, action == "enable")
            record(db, f"webhook-{action}d", f"webhook:{endpoint_id}", url)
        flash(f"Webhook to {url} {action}d.")
    except MailerError as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.integrations"), code=303)


@bp.route("/integrations/webhooks/<int:endpoint_id>", methods=["GET"])
@admin_required
def webhook_deliveries(endpoint_id: int) -> Any:
    app = mailer_app()
    with app.sessions() as db:
        try:
            hook = endpoints.get(db, endpoint_id)
        except MailerError:
            return _page(404, error=f"No webhook endpoint {endpoint_id}.")
        rows = endpoints.recent(db, endpoint_id, limit=100)
        db.expunge_all()
    return render_template("staff/webhook.html", title=f"Webhook to {hook.url}", hook=hook,
                           rows=rows)


@bp.route("/integrations/deliveries/<int:delivery_id>/again", methods=["POST"])
@admin_required
def send_again(delivery_id: int) -> Response:
    app = mailer_app()
    try:
        with app.sessions.begin() as db:
            row = endpoints.send_again(db, delivery_id, now=app.clock.now())
            record(db, "webhook-resent", f"webhook:{row.endpoint_id}",
                   f"delivery {row.id} ({row.event_type}, {row.message_id})")
            endpoint_id = row.endpoint_id
        flash("Queued again: it goes out with the next delivery pass (within seconds while "
              "the scheduler runs).")
    except MailerError as exc:
        flash(str(exc), "error")
        return redirect(url_for("staff.integrations"), code=303)
    return redirect(url_for("staff.webhook_deliveries", endpoint_id=endpoint_id), code=303)
