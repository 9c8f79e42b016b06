"""Render stage: view building, UTM links, the edition's HTML and text parts, the archive page
and the confirmation email."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest

from mailer.config import Settings
from mailer.models import Article
from mailer.placeholders import ANY_SLOT_RE
from mailer.render import (
    ArticleView,
    EditionView,
    Rendered,
    add_utm,
    build_view,
    long_date,
    render_archive,
    render_confirmation,
    render_edition,
    variant_view,
)

DAY = date(2026, 11, 26)  # a Thursday
LEAD_IMAGE = "https://labourlist.org/wp-content/uploads/2026/11/lead.jpg"
GMAIL_CLIP = 102 * 1000  # Gmail clips "about 102 KB"; stay under the smaller reading


def article(n: int, **overrides: object) -> Article:
    values: dict[str, object] = {
        "guid": f"https://labourlist.org/?p={1000 + n}",
        "title": f"Story number {n}: Labour’s plan for workers’ rights",
        "link": f"https://labourlist.org/2026/11/story-{n}/",
        "author": "Tom Belger, Katie Neame & Morgan Jones",
        "section": "News",
        "summary_text": f"Summary of story {n}. " * 3,
        "summary_html": "",
        "image_url": "",
        "published_at": datetime(2026, 11, 26, 5, n % 60, tzinfo=UTC),
    }
    values.update(overrides)
    return Article(**values)


def big_edition(count: int = 25) -> list[Article]:
    """A heavy but realistic day: long headlines, long slugs, full excerpts, an image."""
    sections = ["News", "Comment", "Analysis", "Columnist", "Interview"]
    title = "Starmer’s plan & the unions: what the “new deal” on employment rights means"
    return [
        article(
            n,
            title=f"{title} ({n})",
            link=f"https://labourlist.org/2026/11/starmers-plan-and-the-unions-what-the-new-deal-"
                 f"on-employment-rights-really-means-for-workers-{n}/",
            section=sections[n % len(sections)],
            summary_text="Labour’s deputy leader has set out plans to strengthen workers’ rights, "
                         "with unions welcoming the move but warning that the detail matters. " * 4,
            image_url=LEAD_IMAGE if n == 0 else "",
        )
        for n in range(count)
    ]


class Hrefs(HTMLParser):
    """Collects every href (entity-decoded, as a browser sees it)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag == "img":
            self.imgs.append(found)


def parse_html(document: str) -> Hrefs:
    parser = Hrefs()
    parser.feed(document)
    parser.close()
    return parser


# ---- add_utm ---------------------------------------------------------------------------------


def test_add_utm_adds_source_medium_campaign_and_content(settings: Settings) -> None:
    url = add_utm("https://labourlist.org/2026/11/x/", settings, DAY, "lead")
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "utm_source": [settings.utm_source],
        "utm_medium": [settings.utm_medium],
        "utm_campaign": ["daily-2026-11-26"],
        "utm_content": ["lead"],
    }


def test_add_utm_keeps_query_and_fragment_and_does_not_duplicate(settings: Settings) -> None:
    url = add_utm("https://labourlist.org/x/?p=12&q=a%20b&utm_source=twitter#comments",
                  settings, DAY)
    parts = urlsplit(url)
    assert parts.fragment == "comments"
    assert parts.query.startswith("p=12&q=a%20b&utm_source=twitter&")
    query = parse_qs(parts.query)
    assert query["utm_source"] == ["twitter"]
    assert query["utm_medium"] == ["email"]
    assert "utm_content" not in query


def test_add_utm_leaves_non_http_links_alone(settings: Settings) -> None:
    assert add_utm("mailto:editor@labourlist.org", settings, DAY) == "mailto:editor@labourlist.org"


# ---- build_view ------------------------------------------------------------------------------


def test_build_view_lead_sections_subject_and_archive_url(settings: Settings) -> None:
    items = [
        article(0, section="Comment"),
        article(1, section="Interview"),
        article(2, section="comment"),
        article(3, section="News"),
        article(4, section=""),
        article(5, section="Analysis"),
    ]
    view = build_view(DAY, items, settings)
    assert isinstance(view, EditionView)
    assert view.lead is not None and view.lead.title.startswith("Story number 0")
    assert [name for name, _ in view.sections] == [
        "News", "Comment", "Analysis", "Interview", "More from LabourList",
    ]
    comment = dict(view.sections)["Comment"]
    assert [a.title[:14] for a in comment] == ["Story number 2"]
    assert view.subject == "LabourList Daily: Thursday 26 November 2026"
    assert view.preheader == view.lead.title  # what the inbox shows after the subject
    assert view.archive_url == "https://mail.example.org/archive/2026-11-26"
    assert [a.url for a in view.articles][0].endswith("utm_content=lead")
    assert all("utm_campaign=daily-2026-11-26" in a.url for a in view.articles)


def test_build_view_respects_given_subject_preheader_and_note(settings: Settings) -> None:
    view = build_view(DAY, [article(0)], settings, subject="Big news\ntoday",
                      preheader="  Short  line ", editor_note="One\n\nTwo")
    assert view.subject == "Big news today"
    assert view.preheader == "Short line"
    assert view.editor_note == "One\n\nTwo"


def test_preheader_defaults_to_the_note_then_the_lead_then_the_setting(
        settings: Settings) -> None:
    noted = build_view(DAY, [article(0)], settings, editor_note="\n  A word first.\nMore.")
    assert noted.preheader == "A word first."
    assert build_view(DAY, [], settings).preheader == settings.preheader
    # A reader of some sections gets their own lead, and it is their preheader too.
    both = build_view(DAY, [article(0, section="News"), article(1, section="Comment")], settings)
    mine = variant_view(both, ["Comment"])
    assert mine.lead is not None and mine.preheader == mine.lead.title != both.preheader
    assert variant_view(noted, ["News"]).preheader == "A word first."


def test_subject_template_fields(settings: Settings) -> None:
    fields = settings.replace(subject="{lead_title}, and {story_count} stories on {date}")
    view = build_view(DAY, [article(0), article(1), article(2)], fields)
    assert view.subject == ("Story number 0: Labour’s plan for workers’ rights, and 3 "
                            "stories on Thursday 26 November 2026")


def test_build_view_odd_subject_template_falls_back(settings: Settings) -> None:
    odd = settings.replace(subject="{date} {unknown} {}")
    view = build_view(DAY, [article(0)], odd)
    assert view.subject == "Thursday 26 November 2026 {unknown} {}"


def test_build_view_drops_unsafe_links_and_images(settings: Settings) -> None:
    items = [
        article(0, image_url="javascript:alert(1)"),
        article(1, link="javascript:alert(1)"),
        article(2, link="/relative/path/"),
        article(3),
    ]
    view = build_view(DAY, items, settings)
    assert view.lead is not None and view.lead.image_url == ""
    assert [a.url.split("?")[0] for a in view.articles] == [
        "https://labourlist.org/2026/11/story-0/", "https://labourlist.org/2026/11/story-3/",
    ]


def test_build_view_excerpt_is_short_and_from_html_when_no_text(settings: Settings) -> None:
    long_text = "word " * 400
    from_html = "<p>From <b>HTML</b> &amp; more [&hellip;]</p>"
    items = [article(0), article(1, summary_text=long_text),
             article(2, summary_text="", summary_html=from_html)]
    view = build_view(DAY, items, settings)
    rest = [a for _, group in view.sections for a in group]
    assert len(rest[0].summary) < 260 and rest[0].summary.endswith("…")
    assert rest[1].summary == "From HTML & more"


def test_excerpt_from_html_keeps_blocks_apart_and_hides_scripts(settings: Settings) -> None:
    # The same extractor as collect's (mailer.htmltext): blocks never run into one word.
    from_html = "<h2>Heading</h2>Body text<script>alert(1)</script><blockquote>Quote</blockquote>"
    items = [article(0), article(1, summary_text="", summary_html=from_html)]
    view = build_view(DAY, items, settings)
    [rest] = [a for _, group in view.sections for a in group]
    assert rest.summary == "Heading Body text Quote"


def test_build_view_with_no_articles(settings: Settings) -> None:
    view = build_view(DAY, [], settings)
    assert view.lead is None and view.sections == []
    rendered = render_edition(view, settings)
    assert "Thursday 26 November 2026" in rendered.html


def test_long_date_is_locale_independent() -> None:
    assert long_date(date(2027, 1, 4)) == "Monday 4 January 2027"


# ---- render_edition --------------------------------------------------------------------------


def test_edition_has_every_part(settings: Settings) -> None:
    items = big_edition(6)
    view = build_view(DAY, items, settings, editor_note="First para.\n\nSecond para\nline two.")
    rendered = render_edition(view, settings)
    assert isinstance(rendered, Rendered) and rendered.placeholders is not None
    slots = rendered.placeholders
    page = rendered.html
    parsed = parse_html(page)
    # date header, greeting placeholder, editor's note paragraphs
    assert "Thursday 26 November 2026" in page
    assert slots.greeting in page
    assert "First para." in page and "Second para<br />line two." in page
    # lead story with its image, decorative: the headline is right under it
    assert view.lead is not None
    lead_img = [img for img in parsed.imgs if img.get("src") == view.lead.image_url]
    assert lead_img and lead_img[0]["alt"] == ""
    # sections, headlines, bylines, excerpts
    for name, group in view.sections:
        assert html.escape(name) in page
        for a in group:
            assert a.url in parsed.hrefs
            assert html.escape(a.title) in page
    assert "By Tom Belger, Katie Neame &amp; Morgan Jones" in page
    # donation block, sign-up prompt, footer
    assert settings.donation_copy in page and "Donate £10 a month" in page
    assert any(h.startswith(settings.donation_url + "?") and "utm_content=donate" in h
               for h in parsed.hrefs)
    assert any(h.startswith(settings.signup_url) for h in parsed.hrefs)
    assert slots.unsubscribe_url in parsed.hrefs and slots.preferences_url in parsed.hrefs
    assert view.archive_url in parsed.hrefs
    assert settings.postal_address in page
    assert "because you subscribed" in page


def test_edition_links_are_absolute(settings: Settings) -> None:
    rendered = render_edition(build_view(DAY, big_edition(), settings), settings)
    assert rendered.placeholders is not None
    own = (rendered.placeholders.unsubscribe_url, rendered.placeholders.preferences_url)
    for href in parse_html(rendered.html).hrefs:
        assert href in own or urlsplit(href).scheme in (
            "http", "https"), href


def test_edition_is_dark_mode_aware_and_has_no_hidden_preheader(settings: Settings) -> None:
    view = build_view(DAY, big_edition(3), settings, preheader="Today: the unions")
    page = render_edition(view, settings).html
    assert '<meta name="color-scheme" content="light dark"' in page
    assert "prefers-color-scheme:dark" in page
    # the preheader is the first visible text, not an invisible mj-preview block (the only
    # display:none is the dark-mode rule that swaps a logo for its dark variant)
    body = page[page.index("<body"):]
    assert "display:none" not in body.replace(" ", "")
    first_text = re.sub(r"<[^>]+>", " ", body).split()
    assert " ".join(first_text[:3]) == "Today: the unions"
    assert 'name="viewport"' in page


def test_hostile_article_fields_are_escaped(settings: Settings) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    items = [
        article(0, title=evil, author=evil, summary_text=evil,
                image_url='https://example.org/a.jpg"onload="alert(1)'),
        article(1, title="</mj-text><mj-raw><script>bad()</script></mj-raw>", section=evil,
                link='https://example.org/?q="><script>bad()</script>'),
    ]
    view = build_view(DAY, items, settings, editor_note=evil, preheader=evil)
    rendered = render_edition(view, settings)
    archive = render_archive(view, settings)
    for page in (rendered.html, archive):
        assert "<script" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;" in page
        assert 'onload="alert' not in page
    # the text part is plain text: the characters are kept as text, not markup
    assert evil in rendered.text


def test_untrusted_fields_cannot_inject_placeholders(settings: Settings) -> None:
    nested = "%%UNSUBSCRIBE%%UNSUBSCRIBE_URL%%_URL%%"
    items = [article(0, title=f"Hi {nested} %%GREETING%%", summary_text="x %%GREETING%% y",
                     link=f"https://evil.example/?steal={nested}",
                     image_url="https://evil.example/%%PREFERENCES_URL%%.png")]
    view = build_view(DAY, items, settings, editor_note="Note %%PREFERENCES_URL%%")
    rendered = render_edition(view, settings)
    slots = rendered.placeholders
    assert slots is not None
    # each slot appears exactly where the template put it, once per part
    assert rendered.html.count(slots.unsubscribe_url) == 1
    assert rendered.html.count(slots.preferences_url) == 1
    assert rendered.html.count(slots.greeting) == 1
    assert rendered.text.count(slots.greeting) == 1
    assert len(ANY_SLOT_RE.findall(rendered.html)) == 3
    # a second render of the same content names its slots differently
    again = render_edition(view, settings).placeholders
    assert again is not None and again.key != slots.key


def test_text_part_has_the_same_articles_and_links(settings: Settings) -> None:
    view = build_view(DAY, big_edition(), settings, editor_note="Good morning.\n\nNote.")
    rendered = render_edition(view, settings)
    slots = rendered.placeholders
    assert slots is not None
    hrefs = set(parse_html(rendered.html).hrefs)
    assert len(hrefs) >= 25
    for href in hrefs:
        assert href in rendered.text, href
    flat = " ".join(rendered.text.split())  # titles may be wrapped over lines
    for a in view.articles:
        assert a.title in flat and a.url in rendered.text
    assert "Note." in rendered.text
    assert slots.unsubscribe_url in rendered.text and slots.preferences_url in rendered.text
    assert slots.greeting in rendered.text
    assert "Donate £10 a month" in rendered.text
    assert settings.postal_address in rendered.text
    # prose is wrapped for plain-text readers; only unbreakable URLs run long
    for line in rendered.text.splitlines():
        assert len(line) <= 78 or "http" in line, line


def test_html_stays_under_gmail_clip_with_25_articles(settings: Settings) -> None:
    rendered = render_edition(build_view(DAY, big_edition(25), settings), settings)
    size = len(rendered.html.encode("utf-8"))
    assert size < GMAIL_CLIP, size
    # the footer (unsubscribe) is what clipping would hide: it must be there
    assert rendered.placeholders is not None
    assert rendered.placeholders.unsubscribe_url in rendered.html[-4000:]


# ---- render_archive --------------------------------------------------------------------------


def test_archive_has_no_per_recipient_parts(settings: Settings) -> None:
    view = build_view(DAY, big_edition(8), settings)
    page = render_archive(view, settings)
    assert ANY_SLOT_RE.search(page) is None
    assert "%%" not in page
    assert "Unsubscribe" not in page and "Manage preferences" not in page
    hrefs = parse_html(page).hrefs
    assert any(h.startswith(settings.signup_url) for h in hrefs)
    for a in view.articles:
        assert a.url in hrefs
    assert "Good morning" in page
    assert settings.postal_address in page


def test_archive_signup_falls_back_to_our_subscribe_page(settings: Settings) -> None:
    own = settings.replace(signup_url="")
    page = render_archive(build_view(DAY, [article(0)], own), own)
    assert any(h.startswith("https://mail.example.org/subscribe?")
               for h in parse_html(page).hrefs)


# ---- render_confirmation ---------------------------------------------------------------------


def test_confirmation_email(settings: Settings) -> None:
    link = "https://mail.example.org/confirm/abc.DEF_123-x?next=%2F&a=1"
    rendered = render_confirmation(settings, link)
    assert link in parse_html(rendered.html).hrefs
    assert html.escape(link) in rendered.html
    assert link in rendered.text
    assert "%%" not in rendered.html and "%%" not in rendered.text
    assert "7 days" in rendered.text and "7 days" in rendered.html
    assert settings.postal_address in rendered.text


def test_confirmation_refuses_a_non_http_link(settings: Settings) -> None:
    with pytest.raises(ValueError):
        render_confirmation(settings, "javascript:alert(1)")


def test_article_view_is_a_plain_dataclass() -> None:
    view = ArticleView(title="t", url="https://x.org/", author="", section="News", summary="",
                       image_url="", published=datetime(2026, 1, 1, tzinfo=UTC))
    assert view.section == "News"
