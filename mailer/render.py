"""Render stage: an edition's articles -> view -> HTML (Jinja2 + MJML) and text/plain.

Rendering happens once per edition. The per-recipient parts (greeting, unsubscribe and
preferences links) are left as slots named with a key made for this render
(`mailer.placeholders`), which `mailer.message` fills cheaply per recipient; the web archive
gets the same content with no slots at all.

Both parts come from the same view so they carry the same articles and the same links
(SpamAssassin's MPART_ALT_DIFF), and untrusted article fields only ever reach the HTML through
Jinja's autoescaping.

The templates come from `mailer.templating`: the bundled ones, each replaceable by a file of
the same name in the newsroom's `templates_dir`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mjml import mjml2html

from mailer.asks import DonationAsk, live
from mailer.config import Settings
from mailer.htmltext import html_to_text
from mailer.models import Article
from mailer.placeholders import Placeholders
from mailer.templating import render_template

log = logging.getLogger(__name__)

EDITION_HTML = "edition.mjml.j2"
EDITION_TEXT = "edition.txt.j2"
CONFIRM_HTML = "confirm.mjml.j2"
CONFIRM_TEXT = "confirm.txt.j2"

LEAD_EXCERPT = 420   # characters; the lead gets a fuller excerpt than the rest
EXCERPT = 240
UNSECTIONED = "More from LabourList"
ARCHIVE_GREETING = "Good morning"

_STRAY_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(r"%[0-9a-f][0-9A-Fa-f]|%[0-9A-F][a-f]")

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


@dataclass
class ArticleView:
    """One story as the templates show it; `url` already carries the UTM parameters."""

    title: str
    url: str
    author: str
    section: str
    summary: str
    image_url: str
    published: datetime
    article_id: int | None = None


@dataclass
class EditionView:
    """Everything the edition templates need, and nothing per recipient."""

    edition_date: date
    subject: str
    preheader: str
    editor_note: str
    lead: ArticleView | None
    sections: list[tuple[str, list[ArticleView]]]
    archive_url: str
    donation_url: str = ""
    signup_url: str = ""
    #: "Most read" stories of the previous days (`mailer.clicks.most_read`), after the rest.
    most_read: list[ArticleView] = field(default_factory=list)
    #: Click measurement (`mailer.clicks.links`): the scanner trap link, in the HTML only and
    #: unreachable by a person, and the open pixel; "" when off.
    trap_url: str = ""
    pixel_url: str = ""
    #: The weekly digest: the week's top stories, said so in the email.
    weekly: bool = False
    #: The preheader is the lead's headline (none was given): a reader's own lead replaces it.
    preheader_is_lead: bool = False
    #: The donation ask this rendering shows (`mailer.asks`), and every live ask's donate
    #: link, so the edition's link list (and its click tokens) covers each reader's ask.
    ask: DonationAsk | None = None
    donation_urls: tuple[str, ...] = ()

    @property
    def articles(self) -> list[ArticleView]:
        """All stories in the order the email shows them (lead first)."""
        rest = [a for _, items in self.sections for a in items]
        return ([self.lead] if self.lead else []) + rest + self.most_read


@dataclass
class Rendered:
    """An email's two bodies. An edition's `html`/`text` contain the per-recipient slots
    named by `placeholders` (None for emails with nothing per recipient)."""

    html: str
    text: str
    placeholders: Placeholders | None = None


# ---- building the view -----------------------------------------------------------------------


def weekly_day(weekly_send: str) -> str:
    """'Saturday' for the setting `weekly_send = "sat 08:00"`: the day the weekly comes."""
    short = weekly_send.strip()[:3].lower()
    return next((name for name in _DAYS if name[:3].lower() == short), "Saturday")


def long_date(day: date) -> str:
    """'Thursday 26 November 2026', independent of the process locale."""
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def add_utm(url: str, settings: Settings, edition_date: date, content: str = "", *,
            weekly: bool = False) -> str:
    """Tag a link so the site's analytics can tell which edition (and which slot) a visit
    came from; a weekly digest's campaign is weekly-DATE. Existing query and fragment are
    kept as they are; a utm_ key the link already has is left alone rather than duplicated.
    Non-http(s) links are returned unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    wanted = [
        ("utm_source", settings.utm_source),
        ("utm_medium", settings.utm_medium),
        ("utm_campaign", f"{'weekly' if weekly else 'daily'}-{edition_date.isoformat()}"),
    ]
    if content:
        wanted.append(("utm_content", content))
    extra = urlencode([(k, v) for k, v in wanted if v and k not in present])
    if not extra:
        return url
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def build_view(
    edition_date: date,
    articles: list[Article],
    settings: Settings,
    *,
    subject: str = "",
    preheader: str = "",
    editor_note: str = "",
    most_read: Sequence[Article] = (),
    weekly: bool = False,
) -> EditionView:
    """Shape the edition for the templates: the first article is the lead, the rest are
    grouped by section in the configured order (unknown sections after, in the order they
    first appear). Articles without an http(s) link are left out: every link must work.
    `most_read` are earlier stories for the "Most read" block, shown after the rest."""
    views: list[ArticleView] = []
    for article in articles:
        if _scheme(article.link) not in ("http", "https"):
            log.warning("article %s left out of the edition: link %r is not http(s)",
                        article.guid, article.link)
            continue
        content = "lead" if not views else f"story-{len(views) + 1}"
        views.append(_article_view(article, settings, edition_date, content, weekly,
                                   LEAD_EXCERPT if not views else EXCERPT))
    popular = [_article_view(article, settings, edition_date, f"most-read-{n}", False, EXCERPT)
               for n, article in enumerate(most_read, start=1)
               if _scheme(article.link) in ("http", "https")]

    lead, rest = (views[0], views[1:]) if views else (None, [])
    order = {name.casefold(): name for name in settings.sections}
    groups: dict[str, list[ArticleView]] = {}
    for view in rest:
        key = view.section.casefold() if view.section else ""
        groups.setdefault(key, []).append(view)
    sections: list[tuple[str, list[ArticleView]]] = [
        (name, groups.pop(key)) for key, name in order.items() if key in groups
    ]
    unsectioned = groups.pop("", None)
    sections.extend((items[0].section, items) for items in groups.values())
    if unsectioned:
        sections.append((UNSECTIONED, unsectioned))

    asks = live(settings.asks)
    if not subject:
        subject = subject_line(settings.weekly_subject if weekly else settings.subject,
                               edition_date, lead, len(views) + len(popular))
    # What an inbox shows after the subject: the editor's first line, else the lead story's
    # headline, which say more than a fixed line (that is the fallback with no story).
    note_line = next((line for line in _plain(editor_note, keep_newlines=True).split("\n")
                      if line.strip()), "")
    default_preheader = note_line or (lead.title if lead else "") or (
        settings.weekly_preheader if weekly else settings.preheader)
    preheader_is_lead = not preheader and not note_line and lead is not None
    return EditionView(
        edition_date=edition_date,
        subject=_one_line(subject),
        preheader=_one_line(_plain(preheader or default_preheader)),
        editor_note=_plain(editor_note, keep_newlines=True).strip(),
        lead=lead,
        sections=sections,
        archive_url=archive_url(settings, edition_date, weekly=weekly),
        donation_url=donate_url(settings, edition_date, asks[0], weekly=weekly),
        donation_urls=tuple(donate_url(settings, edition_date, ask, weekly=weekly)
                            for ask in asks),
        ask=asks[0],
        signup_url=add_utm(signup_url(settings), settings, edition_date, "signup",
                           weekly=weekly),
        most_read=popular,
        weekly=weekly,
        preheader_is_lead=preheader_is_lead,
    )


SUBJECT_FIELDS = ("date", "lead_title", "story_count")


def subject_line(pattern: str, edition_date: date, lead: ArticleView | None,
                 stories: int) -> str:
    """A subject from its template: {date} ("Thursday 26 November 2026"), {lead_title} (the
    lead story's headline) and {story_count}. A template with other braces is taken as text
    with only those fields replaced, so a typo in the settings never stops a send."""
    values = {"date": long_date(edition_date), "lead_title": lead.title if lead else "",
              "story_count": str(stories)}
    try:
        return _one_line(pattern.format(**values))
    except (AttributeError, KeyError, IndexError, ValueError):
        for name, value in values.items():
            pattern = pattern.replace(f"{{{name}}}", value)
        return _one_line(pattern)


def archive_url(settings: Settings, edition_date: date, *, weekly: bool = False) -> str:
    """The edition's page in the web archive (a weekly digest shares its date with a daily
    edition, so it has a path of its own)."""
    kind = "weekly/" if weekly else ""
    return f"{settings.base_url.rstrip('/')}/archive/{kind}{edition_date.isoformat()}"


def variant_view(view: EditionView, sections: Sequence[str]) -> EditionView:
    """`view` for a reader who chose `sections` (configured names): the other sections' stories
    left out, the lead too if it is in one of them (the first remaining story then leads), and
    the "Most read" block likewise. Stories keep their links, so the edition's link list (and
    each link's click token) serves every variant. No stories left means nothing to send."""
    wanted = {name.casefold() for name in sections}

    def kept(article: ArticleView) -> bool:
        return article.section.casefold() in wanted

    stories = [a for a in ([view.lead] if view.lead else []) if kept(a)]
    groups = [(name, [a for a in items if kept(a)]) for name, items in view.sections]
    groups = [(name, items) for name, items in groups if items]
    if not stories and groups:  # the lead was left out: the first story left leads
        name, items = groups[0]
        stories, groups[0] = [items[0]], (name, items[1:])
        groups = [(n, items) for n, items in groups if items]
    return _led_by(dataclasses.replace(view, sections=groups,
                                       most_read=[a for a in view.most_read if kept(a)]),
                   stories[0] if stories else None)


def top_stories(view: EditionView, ranked: Sequence[int], limit: int,
                sections: Sequence[str] = ()) -> EditionView:
    """The weekly digest as a reader gets it: of the stories in `view`, the first `limit` in
    `ranked` order (article ids, best first) within `sections` (all when empty), the best
    leading. Stories keep their links, so one link list serves every reader's pick."""
    wanted = {name.casefold() for name in sections}
    by_id = {a.article_id: a for a in view.articles if a.article_id is not None}
    picked = [i for i in ranked if i in by_id
              and (not wanted or by_id[i].section.casefold() in wanted)][:limit]
    keep = set(picked[1:])  # (the view's own lead is first in `ranked`: it leads or is out)
    groups = [(name, [a for a in items if a.article_id in keep]) for name, items in view.sections]
    return _led_by(dataclasses.replace(view, sections=[(n, items) for n, items in groups if items],
                                       most_read=[]),
                   by_id[picked[0]] if picked else None)


def _led_by(view: EditionView, lead: ArticleView | None) -> EditionView:
    """`view` with `lead` leading, and as its preheader if the lead's headline was that."""
    preheader = lead.title if view.preheader_is_lead and lead is not None else view.preheader
    return dataclasses.replace(view, lead=lead, preheader=_one_line(preheader))


def donation_content(edition_date: date, ask: DonationAsk, *, weekly: bool = False) -> str:
    """The donate link's utm_content: the edition and the ask, so that a gift in the donation
    platform's export names both (`mailer donations import`): donate-20261126-standard, and
    donate-20261128w-standard for the weekly digest of that date."""
    return f"donate-{edition_date:%Y%m%d}{'w' if weekly else ''}-{ask.name}"


def donate_url(settings: Settings, edition_date: date, ask: DonationAsk, *,
               weekly: bool = False) -> str:
    return add_utm(settings.donation_url, settings, edition_date,
                   donation_content(edition_date, ask, weekly=weekly), weekly=weekly)


def with_ask(view: EditionView, settings: Settings, ask: DonationAsk) -> EditionView:
    """`view` showing donation ask `ask` (one of the live asks its links were made for)."""
    return dataclasses.replace(view, ask=ask,
                               donation_url=donate_url(settings, view.edition_date, ask,
                                                       weekly=view.weekly))


def _article_view(article: Article, settings: Settings, edition_date: date, content: str,
                  weekly: bool, excerpt: int) -> ArticleView:
    return ArticleView(
        title=_plain(article.title) or "(untitled)",
        url=add_utm(_link(article.link), settings, edition_date, content, weekly=weekly),
        author=_plain(article.author),
        section=_plain(article.section),
        summary=_excerpt(article, excerpt),
        image_url=_link(article.image_url)
        if _scheme(article.image_url) in ("http", "https") else "",
        published=article.published_at,
        article_id=article.id,
    )


# ---- rendering -------------------------------------------------------------------------------


def render_edition(view: EditionView, settings: Settings,
                   placeholders: Placeholders | None = None) -> Rendered:
    """The email's HTML and text, rendered and compiled once per edition. Per-recipient values
    are left as slots named with a fresh key, made now that the content is fixed (or by the
    caller, when the view's links already hold a slot: per-reader click tracking)."""
    placeholders = placeholders or Placeholders.new()
    context = _edition_context(view, settings, archive=False, placeholders=placeholders)
    return Rendered(html=compile_mjml(render_template(settings, EDITION_HTML, context)),
                    text=tidy_text(render_template(settings, EDITION_TEXT, context)),
                    placeholders=placeholders)


def render_archive(view: EditionView, settings: Settings) -> str:
    """The web archive page: the same content with no per-recipient placeholder or token;
    where the email has unsubscribe/preferences links, the page has a sign-up link."""
    context = _edition_context(view, settings, archive=True, placeholders=None)
    return compile_mjml(render_template(settings, EDITION_HTML, context))


def render_confirmation(settings: Settings, confirm_url: str) -> Rendered:
    """The double opt-in email: one button, the link also spelled out, and what happens if
    the reader ignores it."""
    if _scheme(confirm_url) not in ("http", "https"):
        raise ValueError(f"confirmation link must be an absolute http(s) URL: {confirm_url!r}")
    context = _common_context(settings) | {
        "confirm_url": confirm_url,
        "max_age_days": settings.confirm_max_age_days,
        "subject": f"Please confirm your subscription to {_brand(settings)}",
    }
    return Rendered(html=compile_mjml(render_template(settings, CONFIRM_HTML, context)),
                    text=tidy_text(render_template(settings, CONFIRM_TEXT, context)))


def signup_url(settings: Settings) -> str:
    """Where a reader of a forwarded copy (or of the archive) signs up."""
    return settings.signup_url or f"{settings.base_url.rstrip('/')}/subscribe"


def _common_context(settings: Settings) -> dict[str, Any]:
    brand = _brand(settings)
    publication = brand.removesuffix(" Daily").strip() or brand
    return {"brand": brand, "publication": publication, "logo_url": settings.logo_url,
            "logo_dark_url": settings.logo_dark_url, "logo_alt": settings.logo_alt or brand,
            "postal_address": settings.postal_address, "signup_url": signup_url(settings)}


def _edition_context(view: EditionView, settings: Settings, *, archive: bool,
                     placeholders: Placeholders | None) -> dict[str, Any]:
    day = view.edition_date
    ask = view.ask or live(settings.asks)[0]
    return _common_context(settings) | {
        "view": view,
        "archive": archive,
        "date_long": long_date(day),
        "note_paragraphs": _paragraphs(view.editor_note),
        "signoff": settings.editor_signoff if view.editor_note.strip() else "",
        # The per-recipient values: slots in the email, nothing personal in the archive.
        "greeting": placeholders.greeting if placeholders else ARCHIVE_GREETING,
        "unsubscribe_url": placeholders.unsubscribe_url if placeholders else "",
        "preferences_url": placeholders.preferences_url if placeholders else "",
        "signup_url": view.signup_url,
        "donation_url": view.donation_url,
        "ask": ask,
        # (the names templates copied before there were several asks still work)
        "donation_copy": ask.copy,
        "donation_amount": ask.amount,
    }


def compile_mjml(mjml_source: str) -> str:
    """MJML -> HTML, then squeeze the whitespace MJML leaves between tags (Gmail clips at
    102 KB, so bytes matter). Only inter-tag runs containing a newline are touched, so text
    and <pre>-like content is unchanged."""
    out = mjml2html(mjml_source, disable_comments=True, fonts={})
    return re.sub(r">\s*\n\s*<", "><", out).strip() + "\n"


def tidy_text(rendered: str) -> str:
    """Collapse runs of blank lines the template's conditionals leave behind."""
    # (trailing spaces go, except the one of the signature separator "-- ", RFC 3676)
    lines = ["-- " if line.rstrip() == "--" else line.rstrip() for line in rendered.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# ---- text helpers ----------------------------------------------------------------------------


def _scheme(url: str | None) -> str:
    return urlsplit(url or "").scheme.lower() if url else ""


def _brand(settings: Settings) -> str:
    name = settings.from_addr.partition("<")[0].strip().strip('"')
    return name or "LabourList Daily"


def _plain(value: str | None, *, keep_newlines: bool = False) -> str:
    """Plain text safe to show: controls removed, whitespace tidied."""
    text = value or ""
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text.replace("\r\n", "\n"))
    if keep_newlines:
        lines = [" ".join(line.split()) for line in text.replace("\r", "\n").split("\n")]
        return "\n".join(lines)
    return " ".join(text.split())


def _link(url: str | None) -> str:
    """A link from the feed in RFC 3986's normal form: characters a URL may not hold (space,
    ``<``, ``>``, quotes ...) percent-encoded, and every ``%`` a percent-escape in upper-case
    hex (a stray ``%`` becomes ``%25``). Providers' own substitution variables start with
    ``%`` and a letter (Mailgun's ``%recipient%``, ``%unsubscribe_url%``), so none can be live
    in a link a feed wrote; the link still goes where it went, and the text part can show it
    whole."""
    url = _STRAY_PERCENT_RE.sub("%25", url or "")
    url = quote(url, safe="!#$%&'()*+,-./:;=?@[]_~")
    return _ESCAPE_RE.sub(lambda m: m.group(0).upper(), url)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _excerpt(article: Article, limit: int) -> str:
    text = _plain(article.summary_text) or _plain(html_to_text(article.summary_html or ""))
    text = re.sub(r"\s*(\[(…|\.\.\.|&hellip;)\]|…)\s*$", "", text)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.-–—")
    return f"{cut}…"


def _paragraphs(note: str) -> list[list[str]]:
    """The editor's note as paragraphs (blank-line separated) of lines (single newlines)."""
    blocks = re.split(r"\n\s*\n", note.strip()) if note.strip() else []
    return [[line for line in block.split("\n") if line.strip()] for block in blocks]
