"""Console page for admins: the staff accounts (add, disable, reset, roles, erasure right).

The same domain calls as `mailer staff`, each change in the audit log under the admin's name.
A new account's password, and a reset one, is made here and shown once on the POST's own
answer (never in a redirect or the session), for the admin to pass on. An admin cannot
disable, demote or take rights from their own account, so nobody locks the last door from
inside; the CLI on the server stays the way back in.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from mailer import accounts
from mailer.errors import MailerError
from mailer.web.context import mailer_app
from mailer.web.staff.auth import admin_required, bp, current_staff, record

ACTIONS = ("disable", "enable", "reset", "allow-erase", "deny-erase", "make-admin",
           "make-editor")


def _page(status: int = 200, **shown: Any) -> tuple[str, int]:
    with mailer_app().sessions() as db:
        users = accounts.list_staff(db)
        db.expunge_all()
    return render_template("staff/team.html", title="Staff accounts", users=users,
                           roles=accounts.ROLES, **shown), status


@bp.route("/team", methods=["GET"])
@admin_required
def team() -> Any:
    return _page()


@bp.route("/team", methods=["POST"])
@admin_required
def add_member() -> Any:
    app = mailer_app()
    password = accounts.new_password()
    try:
        with app.sessions.begin() as db:
            user = accounts.add_staff(db, request.form.get("email", ""), password,
                                      role=request.form.get("role", accounts.EDITOR),
                                      at=app.clock.now())
            record(db, "staff-added", f"staff:{user.email}", f"role {user.role}")
            email = user.email
    except MailerError as exc:
        return _page(400, error=str(exc))
    return _page(new_password=password, for_email=email)


@bp.route("/team/<int:user_id>/<any(" + ", ".join(f'"{a}"' for a in ACTIONS) + "):action>",
          methods=["POST"])
@admin_required
def change_member(user_id: int, action: str) -> Any:
    app = mailer_app()
    me = current_staff()
    if user_id == me.id and action in ("disable", "deny-erase", "make-editor"):
        flash("You cannot do that to your own account: ask another admin, or use "
              "`mailer staff` on the server.", "error")
        return redirect(url_for("staff.team"), code=303)
    password = ""
    with app.sessions.begin() as db:
        user = next((u for u in accounts.list_staff(db) if u.id == user_id), None)
        if user is None:
            flash("No such account.", "error")
            return redirect(url_for("staff.team"), code=303)
        email = user.email
        if action == "disable":
            accounts.disable_staff(db, email, now=app.clock.now())
        elif action == "enable":
            accounts.enable_staff(db, email)
        elif action == "reset":
            password = accounts.new_password()
            accounts.set_password(db, email, password)
        elif action in ("allow-erase", "deny-erase"):
            accounts.set_can_erase(db, email, action == "allow-erase")
        else:
            accounts.set_role(db, email, action.removeprefix("make-"))
        record(db, f"staff-{action}", f"staff:{email}")
    if password:
        return _page(new_password=password, for_email=email)
    flash(_done(action, email))
    return redirect(url_for("staff.team"), code=303)


def _done(action: str, email: str) -> str:
    return {
        "disable": f"{email} is disabled: they cannot sign in, and their sessions have ended.",
        "enable": f"{email} can sign in again.",
        "allow-erase": f"{email} may now erase subscribers.",
        "deny-erase": f"{email} may no longer erase subscribers.",
        "make-admin": f"{email} is now an admin.",
        "make-editor": f"{email} is now an editor.",
    }[action]
