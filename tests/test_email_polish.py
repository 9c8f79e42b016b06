"""The email as an editor and a designer want it: a logo masthead with its dark variant,
quiet bylines and standfirsts under near-white headlines in dark mode, the editor's sign-off,
a decorative lead picture, and the text part's signature separator."""

from __future__ import annotations

import re
from datetime import date

import pytest

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.render import build_view, render_edition
from tests.test_render import LEAD_IMAGE, article

DAY = date(2026, 11, 26)
LOGO, DARK = "https://labourlist.org/logo.png", "https://labourlist.org/logo-dark.png"


def edition(settings: Settings, note: str = "") -> tuple[str, str]:
    items = [article(0, image_url=LEAD_IMAGE), article(1), article(2, section="Comment")]
    rendered = render_edition(build_view(DAY, items, settings, editor_note=note), settings)
    return rendered.html, rendered.text


def test_a_logo_masthead_with_its_dark_variant_and_styled_alt_text(settings: Settings) -> None:
    page, _ = edition(settings.replace(logo_url=LOGO, logo_dark_url=DARK, logo_alt="LabourList"))
    light = re.search(r'<img class="ll-logo-light" src="' + re.escape(LOGO) + r'"[^>]*>', page)
    assert light and 'alt="LabourList"' in light.group(0)
    assert "font-family:Georgia" in light.group(0) and "color:#ffffff" in light.group(0)
    assert f'src="{DARK}"' in page and ".ll-logo-dark{display:block!important" in page
    assert ">LabourList Daily</h1>" not in page  # the logo replaces the text masthead
    text_only, _ = edition(settings)
    assert ">LabourList Daily</h1>" in text_only and "ll-logo" not in text_only.split("<body")[1]


def test_a_logo_needs_https_and_a_dark_logo_needs_a_light_one(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="logo_url"):
        settings.replace(logo_url="javascript:alert(1)")
    with pytest.raises(ConfigError, match="logo_dark_url"):
        settings.replace(logo_dark_url=DARK)


def test_headlines_are_plain_and_stay_light_in_dark_mode(settings: Settings) -> None:
    page, _ = edition(settings)
    headlines = re.findall(r'<a class="ll-headline"[^>]*style="([^"]*)"', page)
    assert len(headlines) == 3
    assert all("text-decoration:none" in s and "font-weight:bold" in s for s in headlines)
    dark = page[page.index("prefers-color-scheme:dark"):]
    assert ".ll-text a.ll-headline{color:#f5f5f5!important}" in dark
    # bylines and standfirsts are quieter than the headlines
    assert re.search(r'class="ll-muted" style="font-size:13px;color:#595959', page)
    assert re.search(r'class="ll-standfirst" style="font-size:15px;color:#3d3d3d', page)


def test_the_editors_note_is_signed_and_the_text_part_has_a_signature_separator(
        settings: Settings) -> None:
    signed = settings.replace(editor_signoff="Hannah, LabourList editor")
    page, text = edition(signed, note="A big day for the movement.")
    assert "&#8212; Hannah, LabourList editor</p>" in page or "— Hannah, LabourList editor" in page
    assert "— Hannah, LabourList editor" in text
    assert "-- " in text.splitlines()  # RFC 3676's separator, trailing space kept
    unsigned, _ = edition(signed)  # no note: nothing to sign
    assert "Hannah" not in unsigned


def test_the_lead_picture_is_decorative_when_it_repeats_the_headline(settings: Settings) -> None:
    page, _ = edition(settings)
    img = re.search(r'<img src="' + re.escape(LEAD_IMAGE) + r'"[^>]*>', page)
    assert img and 'alt=""' in img.group(0) and "font-family:Georgia" in img.group(0)
    before = page[:img.start()]
    assert before.count("<a ") == before.count("</a>")  # not inside a link
    assert before.endswith('<tr><td style="padding:4px 20px 8px;">')  # a row of its table
