"""Preflight: no edition leaves unless it is a good email.

The checks run on a real sample message of the edition, built by the same `Personaliser` the
dispatcher uses (so the headers, encoding and filled links are byte for byte what a subscriber
would get), addressed to a fictional reader whose tokens unsubscribe nobody. They look at it the
way a deliverability team and a careful editor would: the headers Gmail and Yahoo require of bulk
senders, Gmail's 102 KB clipping, a text part that carries the same stories as the HTML, links
and images that work for a reader (absolute, public, with alt text), no hidden text, and the
SpamAssassin score with local rules only.

Each finding has a severity: an error stops the send (unless forced with a logged reason), a
warning is shown. `check_before_send` is what the dispatch path calls (through
`mailer.pipeline.run_preflight`); `mailer preflight` runs the same checks on demand, and
`render_screenshots` gives the staff console and the CLI the same four rendered views.

The checks themselves live in `checks.py` (one decorated function each), what a page shows in
`page.py`, link probing in `links.py`, the rendered views in `screenshots.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from sqlalchemy import update

from mailer.app import App
from mailer.clicks.links import OFF, untrack
from mailer.clicks.store import load_links
from mailer.clicks.tokens import LinkSigner
from mailer.config import Settings
from mailer.edition import edition_articles
from mailer.errors import MailerError, PreflightError
from mailer.ledger import Claim
from mailer.models import Edition
from mailer.personalise import Personaliser
from mailer.placeholders import Placeholders
from mailer.preflight.checks import (
    CHECKS,
    LOCAL_ONLY_CODES,
    ArticleLinks,
    Context,
    run_check,
    settings_findings,
)
from mailer.preflight.dnscache import domain_report
from mailer.preflight.findings import ERROR, WARNING, Finding, Report
from mailer.preflight.links import check_live_links, tracked, url_scheme
from mailer.preflight.page import parse_html, part_text
from mailer.preflight.spamassassin import (
    SpamCheckUnavailable,
    SpamRule,
    configured_command,
    spam_score,
)

log = logging.getLogger("mailer.preflight")
# The fictional reader of the sample message: a non-ASCII name exercises the encoded To header,
# and subscriber id 0 exists in no database, so the sample's tokens unsubscribe nobody.
SAMPLE_EMAIL = "preflight.reader@example.org"
SAMPLE_NAME = "Siân Preflight"
SAMPLE_SUBSCRIBER_ID = 0


@dataclass(frozen=True)
class Sample:
    """The sample message and the per-recipient links that were filled into it."""

    data: bytes
    unsubscribe_url: str
    preferences_url: str
    message_id: str

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def html(self) -> str:
        """The filled HTML part, exactly as a recipient's client would show it."""
        return part_text(self.message, "html") or ""


def sample_message(app: App, edition: Edition) -> Sample:
    """Build the edition's message for the fictional sample reader through the dispatcher's own
    code (`Personaliser`), so what is checked is what would be sent."""
    personaliser = Personaliser.for_edition(app, edition)
    claim = Claim(id=0, subscriber_id=SAMPLE_SUBSCRIBER_ID, email=SAMPLE_EMAIL, name=SAMPLE_NAME,
                  attempts=0, first_name=SAMPLE_NAME.split()[0])
    out = personaliser.outgoing(claim, with_fields=True)
    return Sample(data=out.data, unsubscribe_url=out.fields["unsubscribe_url"],
                  preferences_url=out.fields["preferences_url"], message_id=out.message_id)


def run_checks(app: App, edition: Edition, *, check_links: bool = False,
               dns: str = "daily") -> Report:
    """Run every check on a sample message of `edition`; never raises for a bad edition.

    A check that crashes becomes an error finding naming it, so a bug here shows up as a
    refusal that can be forced with a reason rather than as a traceback at 7am. The sending
    domain's DNS is checked as `dns` says: "daily" (the day's kept verdict, when `dns_check`
    is on), "fresh" (looked up now) or "off".
    """
    settings = app.settings
    report = Report(spam_threshold=_spam_threshold(settings),
                    checked_at=app.clock.now().isoformat())
    for finding in settings_findings(settings):
        report.add(finding)
    if dns == "fresh" or (dns == "daily" and settings.dns_check):
        _check_domain(app, report, fresh=dns == "fresh")
    try:
        sample = sample_message(app, edition)
    except (ValueError, MailerError) as exc:
        report.add(Finding(ERROR, "sample-message",
                           f"could not build a sample message: {exc}"))
        return _finish(report, settings)
    msg = sample.message
    html, text, unresolved = _untracked(app, edition, part_text(msg, "html"),
                                        part_text(msg, "plain"))
    if unresolved:
        report.add(Finding(ERROR, "tracked-link",
                           f"{len(unresolved)} tracked "
                           f"{'link leads' if len(unresolved) == 1 else 'links lead'} to none "
                           "of the edition's "
                           f"links: {', '.join(unresolved[:3])}"))
    page = parse_html(html or "")
    articles = _article_links(app, edition)
    slots = Placeholders(edition.placeholder_key)

    context = Context(msg=msg, data=sample.data, html=html, text=text, page=page,
                      unsubscribe_url=sample.unsubscribe_url, articles=articles, slots=slots,
                      settings=settings)
    for name, check in CHECKS.items():
        try:
            for finding in run_check(check, context):
                report.add(finding)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.exception("preflight check %s crashed", name)
            report.add(Finding(ERROR, "check-crashed", f"the {name} check crashed: {exc!r}"))
    try:
        result = spam_score(sample.data, command=configured_command(settings),
                            timeout=settings.spamassassin_timeout)
    except SpamCheckUnavailable as exc:
        report.add(Finding(WARNING, "spamassassin", str(exc)))
    else:
        report.spam_score, report.rules = result.score, result.rules
        if result.score > report.spam_threshold:
            fired = ", ".join(f"{r.name} ({r.score:g})" for r in _worst(result.rules)) or "none"
            report.add(Finding(ERROR, "spam-score",
                               f"SpamAssassin score {result.score:g} is over the limit "
                               f"{report.spam_threshold:g}: {fired}"))
    if check_links:
        urls = [a.href for a in page.links if tracked(a.href) in articles.all]
        urls += [img.src for img in page.images]
        for finding in check_live_links(urls, timeout=settings.link_check_timeout,
                                        user_agent=settings.user_agent,
                                        allow_local=settings.allow_local_links):
            report.add(finding)
    return _finish(report, settings)


def check_before_send(app: App, edition: Edition, *, force: bool = False,
                      reason: str = "") -> Report:
    """The dispatch path's gate: check, record the result on the edition, refuse on an error.

    With `force` the send goes ahead despite errors, but only with a reason, which is stored
    with the findings (the pipeline also writes it to `Edition.forced_reason`).
    """
    report = run_checks(app, edition)
    reason = " ".join(reason.split())
    forced = force and not report.ok
    if forced and not reason:
        raise PreflightError(report.failure_line().replace(
            "fix it or use", "forcing past it needs a reason: use"))
    record(app, edition, report, forced=forced, reason=reason if force else "")
    if not report.ok and not force:
        raise PreflightError(report.failure_line())
    if forced:
        log.warning("edition %s forced past %d preflight error(s) (%s): %s",
                    edition.edition_date, len(report.errors),
                    "; ".join(f.message for f in report.errors), reason)
    for warning in report.warnings:
        log.warning("edition %s: %s", edition.edition_date,
                    warning.message)
    return report


def record(app: App, edition: Edition, report: Report, *, forced: bool = False,
           reason: str = "") -> dict[str, Any]:
    """Store the report on the edition (the row and the object passed in)."""
    data = report.as_json(forced=forced, reason=reason)
    with app.sessions.begin() as session:
        session.execute(update(Edition).where(Edition.id == edition.id).values(preflight=data))
    edition.preflight = data
    return data


def _check_domain(app: App, report: Report, *, fresh: bool) -> None:
    try:
        domain, checked_at = domain_report(app, fresh=fresh)
    except Exception as exc:  # noqa: BLE001 - a bug here must not stop the morning's send
        log.exception("the sending domain's DNS check crashed")
        report.add(Finding(WARNING, "dns-crashed", f"the DNS check crashed: {exc!r}"))
        return
    for finding in domain.findings:
        report.add(finding)
    report.domain = {"checked_at": checked_at, "passed": domain.passed,
                     "complete": domain.complete}


def _spam_threshold(settings: Settings) -> float:
    return settings.spam_threshold


def _finish(report: Report, settings: Settings) -> Report:
    """Downgrade link findings that only matter to a production reader: when nobody gets the
    mail (the file:// outbox), or on a staging deployment that says so (`allow_local_links`)."""
    if settings.dsn.startswith("file://"):
        why = "the file:// outbox delivers to no one"
    elif settings.allow_local_links:
        why = "allow_local_links is set"
    else:
        return report
    keep: list[Finding] = []
    for finding in report.errors:
        if finding.code in LOCAL_ONLY_CODES:
            report.warnings.append(Finding(WARNING, finding.code,
                                           f"{finding.message} (a warning only: {why})"))
        else:
            keep.append(finding)
    report.errors = keep
    return report


def _untracked(app: App, edition: Edition, html: str | None,
               text: str | None) -> tuple[str | None, str | None, list[str]]:
    """The parts with each click redirect replaced by where it leads (and no trap link or
    pixel), so the checks judge the links a reader reaches; the redirects that lead nowhere."""
    if edition.click_tracking == OFF or edition.id is None:
        return html, text, []
    with app.sessions() as session:
        links = {link.position: link for link in load_links(session, edition.id)}
    signer = LinkSigner(app.secret_key)
    unresolved: list[str] = []
    parts: list[str | None] = []
    for body, is_html in ((html, True), (text, False)):
        if body is None:
            parts.append(None)
            continue
        body, bad = untrack(body, links, edition_id=edition.id, base_url=app.settings.base_url,
                            signer=signer, html=is_html)
        parts.append(body)
        unresolved += bad
    return parts[0], parts[1], list(dict.fromkeys(unresolved))


def _article_links(app: App, edition: Edition) -> ArticleLinks:
    links = ArticleLinks()
    if edition.id is None:
        return links
    with app.sessions() as session:
        for article in edition_articles(session, edition.id):
            if url_scheme(article.link) in ("http", "https"):
                links.all.add(tracked(article.link))
            else:
                links.dropped.append((article.title, article.link))
    return links


def _worst(rules: list[SpamRule]) -> list[SpamRule]:
    return [r for r in rules if r.score > 0][:8]
