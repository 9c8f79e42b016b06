"""The click figures as files: an edition's link figures as CSV, for the newsroom's sheets,
and, for a per-reader edition, the readers who clicked (for re-engagement).

The page itself shows the figures (`staff/_clicks.html`, from `mailer.clicks.report`); the
files are the same data with spreadsheet formulas defused as the subscriber export does. The
readers' list is personal data: admins only, and each download is in the audit log.
"""

from __future__ import annotations

import csv
import io

from flask import abort
from werkzeug.wrappers import Response

from mailer.clicks.links import PER_READER
from mailer.clicks.report import edition_stats, readers_who_clicked
from mailer.edition import get_edition
from mailer.models import DAILY
from mailer.subscribers import defuse_cell
from mailer.web.context import mailer_app
from mailer.web.staff.auth import admin_required, edition_route, login_required, parse_day, record

COLUMNS = ("rank", "kind", "title", "url", "clicks_human", "clicks_filtered")


@edition_route("/clicks.csv", methods=["GET"])
@login_required
def edition_clicks_csv(day: str, kind: str = DAILY) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    with app.sessions() as db:
        edition = get_edition(db, the_day, kind)
        if edition is None:
            abort(404)
        figures = edition_stats(db, edition)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for rank, row in enumerate(figures["links"], start=1):
        writer.writerow([rank, row["kind"], defuse_cell(row["title"]), defuse_cell(row["url"]),
                         row["clicks_human"], row["clicks_filtered"]])
    response = Response(out.getvalue(), mimetype="text/csv")
    name = f"clicks-{'' if kind == DAILY else 'weekly-'}{the_day.isoformat()}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@edition_route("/clickers.csv", methods=["GET"])
@admin_required
def edition_clickers_csv(day: str, kind: str = DAILY) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    with app.sessions() as db:
        edition = get_edition(db, the_day, kind)
        if edition is None or edition.click_tracking != PER_READER:
            abort(404)  # aggregate clicks name nobody
        readers = readers_who_clicked(db, edition.id)
    with app.sessions.begin() as db:
        record(db, "clickers-exported", f"edition {the_day}", f"{len(readers)} readers")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("email", "first_name", "clicks_human"))
    for email, first, clicks in readers:
        writer.writerow([defuse_cell(email), defuse_cell(first), clicks])
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="readers-who-clicked-{the_day.isoformat()}.csv"')
    return response
