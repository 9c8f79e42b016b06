"""Hostile and real-world CSV files, through the CLI and the staff console (issue 19).

* A real list (50,000 rows, about 2 MB) imports through the console in batches, each in its own
  short transaction, so a confirmation click or a webhook can write to SQLite while it runs;
  a file over the limit gets a 413 page that says the limit.
* Cells that export defused with a leading `'` (formula-like: = + - @, tab, CR) come back
  as they were: an address may start with `=`.
* Excel's "CSV" is Windows-1252, not UTF-8: it imports with its accents intact; a file that is
  not text at all is one line of error and a non-zero exit, and nothing is imported.
"""

from __future__ import annotations

import csv
import io
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select

from mailer.accounts import ADMIN, add_staff
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import ACTIVE, PENDING, Subscriber
from mailer.subscribers import add, find
from mailer.web import create_app
from tests.support.settings import make_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
STAFF, PASSWORD = "admin@example.org", "correct horse battery staple"
IMPORT = "/staff/subscribers/import"
# The smallest PNG there is (a 1x1 transparent pixel), as a browser would upload it.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


@pytest.fixture
def admin(app: App) -> FlaskClient:
    with app.sessions.begin() as session:
        add_staff(session, STAFF, PASSWORD, role=ADMIN)
    client = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()
    signed_in = client.post("/staff/login", data={"csrf_token": _token(client, "/staff/login"),
                                                  "email": STAFF, "password": PASSWORD})
    assert signed_in.status_code == 303
    return client


def _token(client: FlaskClient, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def upload(client: FlaskClient, body: bytes, filename: str = "list.csv") -> tuple[int, str]:
    response = client.post(IMPORT, data={"csrf_token": _token(client, IMPORT),
                                         "csv": (io.BytesIO(body), filename)},
                           content_type="multipart/form-data")
    return response.status_code, response.get_data(as_text=True)


def cli_env(app: App) -> dict[str, str]:
    return {"MAILER_DATABASE_URL": app.settings.database_url,
            "MAILER_SECRET_KEY": "test-secret-key"}


def count(app: App) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def names(app: App) -> dict[str, str]:
    with app.sessions() as session:
        return {email: name for email, name in session.execute(
            select(Subscriber.email, Subscriber.name))}


def big_list(rows: int) -> bytes:
    lines = ["email,name,status"]
    lines += [f"reader{i}@example.org,Reader Number {i}," for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# ---- 5: a real list through the console ----------------------------------------------------


def test_a_50000_row_list_imports_through_the_console(admin: FlaskClient, app: App) -> None:
    body = big_list(50_000)
    # Two bad lines and a repeat after 50,000 good ones: the line numbers must still be right.
    body += (b"not an address,Bad,\n"          # line 50,002
             b"reader7@example.org,Again,\n"   # line 50,003: already in this file
             b"late@example.org,Late,royalty\n"  # line 50,004: no such status
             b"last@example.org,Last,pending\n")
    assert len(body) > 2_000_000  # ten times what used to get a 413
    started = time.monotonic()
    status, page = upload(admin, body)
    took = time.monotonic() - started
    assert status == 200, page[:2000]
    assert "Added 50,001 subscribers; 1 was already on the list; 2 lines were not imported." in page
    assert '<td class="num">50002</td>' in page and '<td class="num">50004</td>' in page
    assert count(app) == 50_001
    with app.sessions() as session:
        assert find(session, "reader49999@example.org").status == ACTIVE  # type: ignore
        assert find(session, "last@example.org").status == PENDING  # type: ignore
    assert took < 30, f"the import took {took:.1f} s"  # 3 s on SQLite, 7 on PostgreSQL


def test_a_file_over_the_limit_gets_a_413_page_naming_it(
        admin: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailer.web.staff import subscribers as staff_subscribers

    monkeypatch.setattr(staff_subscribers, "MAX_IMPORT_BYTES", 1024 * 1024)
    status, page = upload(admin, big_list(30_000))
    assert status == 413
    assert "1 MB" in page and "Nothing was imported" in page
    assert "Import subscribers" in page  # the import page, with its form to try again


def test_the_result_page_lists_a_bounded_number_of_bad_lines(admin: FlaskClient) -> None:
    body = "email\n" + "".join(f"bad {i}\n" for i in range(1500)) + "good@example.org\n"
    status, page = upload(admin, body.encode())
    assert status == 200 and "Added 1 subscriber; 1,500 lines were not imported." in page
    assert page.count("<tr><td class=\"num\">") == 500
    assert "1,000 more lines were not imported" in page


def test_another_writer_gets_in_while_a_big_import_runs(tmp_path: Path,
                                                        clock: FixedClock) -> None:
    """SQLite has one writer at a time: an import of 50,000 rows in one transaction would hold
    the lock for the whole request, and a confirmation click or a webhook would wait for it
    (or give up after the busy timeout). Between batches, they get in. (PostgreSQL writers of
    different rows never wait for each other.)"""
    app = App.create(make_settings(tmp_path), clock=clock)
    init_db(app.engine)
    with app.sessions.begin() as session:
        add_staff(session, STAFF, PASSWORD, role=ADMIN)
    client = create_app(app, {"TESTING": True}).test_client()
    client.post("/staff/login", data={"csrf_token": _token(client, "/staff/login"),
                                      "email": STAFF, "password": PASSWORD})
    csrf = _token(client, IMPORT)
    # Another process: its own engine and connections.
    other = App.create(make_settings(tmp_path), clock=clock)
    result: dict[str, object] = {}

    def run_import() -> None:
        response = client.post(IMPORT, data={"csrf_token": csrf,
                                             "csv": (io.BytesIO(big_list(50_000)), "l.csv")},
                               content_type="multipart/form-data")
        result["status"] = response.status_code

    importer = threading.Thread(target=run_import)
    importer.start()
    try:
        deadline = time.monotonic() + 120
        while count(other) == 0 and importer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        started = time.monotonic()
        with other.sessions.begin() as session:  # BEGIN IMMEDIATE: the write lock
            writer, _ = add(session, "webhook@example.org", source="web")
        waited = time.monotonic() - started
        writer_id = writer.id
    finally:
        importer.join()
        other.close()
    with app.sessions() as session:
        last_imported = session.scalar(select(func.max(Subscriber.id))
                                       .where(Subscriber.email != "webhook@example.org"))
    total = count(app)
    app.close()
    assert result["status"] == 200 and total == 50_001
    assert last_imported is not None and writer_id < last_imported  # it wrote mid-import
    assert waited < 2.0, f"the other writer waited {waited:.1f} s for the lock"


# ---- 11b: what export defused comes back as it was -----------------------------------------


FORMULA_LIKE = {
    "=sum@example.org": "=SUM(1)",
    "+plus@example.org": "+44 20 7946 0000",
    "-dash@example.org": "-Dash",
    "at@example.org": "@handle",
    "quoted@example.org": "'=already quoted",
    "'=apostrophe@example.org": "'Tis Me",
    "plain@example.org": "O'Brien",
}


def test_formula_like_cells_round_trip_through_cli_export_and_import(
        app: App, tmp_path: Path, clock: FixedClock) -> None:
    with app.sessions.begin() as session:
        for email, name in FORMULA_LIKE.items():
            add(session, email, name=name)
    runner = CliRunner()
    out = tmp_path / "export.csv"
    exported = runner.invoke(cli, ["subscribers", "export", "--out", str(out)], env=cli_env(app))
    assert exported.exit_code == 0, exported.output
    cells = {row["email"]: row["name"]
             for row in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert cells["'=sum@example.org"] == "'=SUM(1)"  # defused for spreadsheets
    assert cells["quoted@example.org"] == "''=already quoted"
    assert cells["plain@example.org"] == "O'Brien"

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    target = App.create(make_settings(fresh), clock=clock)
    init_db(target.engine)
    try:
        imported = runner.invoke(cli, ["subscribers", "import", str(out)], env=cli_env(target))
        assert imported.exit_code == 0, imported.output
        assert f"added {len(FORMULA_LIKE)}, already present 0, rejected 0" in imported.output
        assert names(target) == FORMULA_LIKE
    finally:
        target.close()


# ---- 12: Excel's encoding, and files that are not text --------------------------------------


EXCEL_ROWS = {"sian@example.org": "Siân Jones", "zoe@example.org": "Zoë Smith",
              "jose@example.org": "José García", "ob@example.org": "Seán O’Brien"}


def excel_csv() -> bytes:
    """What Excel's "CSV (Comma delimited)" writes on a UK Windows PC: Windows-1252, CRLF."""
    lines = ["Email Address,Name"] + [f"{e},{n}" for e, n in EXCEL_ROWS.items()]
    return "\r\n".join(lines).encode("cp1252") + b"\r\n"


def test_cli_imports_an_excel_cp1252_csv_with_its_accents(app: App, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(excel_csv())
    with pytest.raises(UnicodeDecodeError):
        excel_csv().decode("utf-8")
    result = CliRunner().invoke(cli, ["subscribers", "import", str(path)], env=cli_env(app))
    assert result.exit_code == 0, result.output
    assert "added 4, already present 0, rejected 0" in result.output
    assert names(app) == EXCEL_ROWS


def test_cli_import_keeps_utf8_with_a_byte_order_mark(app: App, tmp_path: Path) -> None:
    path = tmp_path / "utf8.csv"
    path.write_bytes("\ufeffemail,name\nzoe@example.org,Zoë “Z” Smith\n".encode())
    result = CliRunner().invoke(cli, ["subscribers", "import", str(path)], env=cli_env(app))
    assert result.exit_code == 0, result.output
    assert names(app) == {"zoe@example.org": "Zoë “Z” Smith"}


@pytest.mark.parametrize("content", [PNG, random.Random(19).randbytes(4096),
                                     b"email\nann@example.org\n\x00\x00\x01\x02"],
                         ids=["png", "random", "nul-bytes"])
def test_cli_refuses_a_file_that_is_not_text_in_one_line(
        app: App, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["subscribers", "import", str(path)], env=cli_env(app))
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and "not a text" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    assert count(app) == 0


def test_console_imports_an_excel_csv_and_refuses_a_picture(admin: FlaskClient, app: App) -> None:
    status, page = upload(admin, excel_csv(), "excel.csv")
    assert status == 200 and "Added 4 subscribers." in page
    assert names(app) == EXCEL_ROWS
    status, page = upload(admin, PNG, "photo.png")
    assert status == 400
    assert "not a text" in page and "Nothing was imported" in page
    assert count(app) == 4


def test_a_sign_up_racing_a_batch_on_postgresql_is_looked_up_again(
        pg_url: str, tmp_path: Path, clock: FixedClock) -> None:
    """Between a batch's lookup and its INSERT, another connection commits an address from the
    file (a sign-up): the batch is looked up again, and that row is already present."""
    from sqlalchemy import event, insert
    from sqlalchemy.orm import ORMExecuteState, Session

    from mailer.db import make_engine
    from mailer.subscribers import import_csv_batched

    app = App.create(make_settings(tmp_path, database_url=pg_url), clock=clock)
    init_db(app.engine)
    other = make_engine(pg_url)
    raced: list[str] = []

    def sign_up_first(state: ORMExecuteState) -> None:
        if state.is_insert and not raced and state.statement.table.name == "subscribers":
            raced.append("racer@example.org")
            with other.begin() as conn:
                conn.execute(insert(Subscriber.__table__),
                             {"email": "racer@example.org", "status": PENDING})

    event.listen(Session, "do_orm_execute", sign_up_first)
    try:
        report = import_csv_batched(app.sessions, io.StringIO(
            "email\nfirst@example.org\nracer@example.org\nlast@example.org\n"))
    finally:
        event.remove(Session, "do_orm_execute", sign_up_first)
        other.dispose()
    assert raced and (report.added, report.unchanged, report.errors) == (2, 1, [])
    with app.sessions() as session:
        assert find(session, "racer@example.org").status == PENDING  # type: ignore
    app.close()
