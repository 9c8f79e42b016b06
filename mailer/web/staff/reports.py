"""The click figures as files: an edition's link figures as CSV, for the newsroom's sheets.

The page itself shows them (`staff/_clicks.html`, from `mailer.clicks.report`); this is the
same data, one row per link, with spreadsheet formulas in titles and URLs defused as the
subscriber export does.
"""

from __future__ import annotations

import csv
import io

from flask import abort
from werkzeug.wrappers import Response

from mailer.clicks.report import edition_stats
from mailer.edition import get_edition
from mailer.subscribers import defuse_cell
from mailer.web.context import mailer_app
from mailer.web.staff.auth import bp, login_required, parse_day

COLUMNS = ("rank", "kind", "title", "url", "clicks_human", "clicks_filtered")


@bp.get("/editions/<day>/clicks.csv")
@login_required
def edition_clicks_csv(day: str) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    with app.sessions() as db:
        edition = get_edition(db, the_day)
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
    response.headers["Content-Disposition"] = (
        f'attachment; filename="clicks-{the_day.isoformat()}.csv"')
    return response
