"""The four views of an edition staff look at before a send, rendered in headless Chromium.

Nothing leaves the machine while rendering: the page may only load from loopback, and images
from elsewhere are answered with a neutral placeholder so the layout still shows.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from mailer.errors import MailerError
from mailer.preflight.page import Rgb

log = logging.getLogger("mailer.preflight")


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    # Belt and braces: anything that escapes the route handler (a browser-internal fetch) goes
    # to a closed loopback port; loopback itself is never proxied, so local images still load.
    "--proxy-server=http://127.0.0.1:9", "--dns-prefetch-disable",
]
# (name, viewport width, colour scheme, images blocked): phones are where dark mode is read,
# desktop Outlook is where images are blocked by default.
SCREENSHOT_VIEWS: tuple[tuple[str, int, Literal["light", "dark"], bool], ...] = (
    ("375-light", 375, "light", False),
    ("800-light", 800, "light", False),
    ("375-dark", 375, "dark", False),
    ("800-images-off", 800, "light", True),
)


def render_screenshots(html: str, out_dir: Path, *, prefix: str = "",
                       chromium: Path = CHROMIUM) -> list[Path]:
    """Render `html` in headless Chromium four ways and save full-page PNGs in `out_dir`:
    375 px light, 800 px light, 375 px dark and 800 px with images blocked.

    Nothing leaves the machine: every request that is not to a loopback address is refused in
    the page, except that images from elsewhere are answered with a neutral 16:9 placeholder
    (so the layout shows where they sit) in all but the images-off view, where every image
    fails and the alt text shows. Scripts are off, as in every mail client.
    """
    try:
        # Lazy: playwright is a test and console extra; sending never needs it.
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:  # pragma: no cover - playwright is a test/console extra
        raise MailerError("screenshots need the playwright package "
                          "(pip install playwright)") from None
    if not Path(chromium).exists():
        raise MailerError(f"screenshots need Chromium at {chromium} "
                          "(Debian: apt install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for name, width, scheme, images_off in SCREENSHOT_VIEWS:
                context = browser.new_context(viewport={"width": width, "height": 800},
                                              color_scheme=scheme,
                                              java_script_enabled=False,
                                              service_workers="block")
                try:
                    page = context.new_page()
                    page.route("**/*", _router(images_off))
                    page.set_content(html, wait_until="load")
                    path = out_dir / f"{prefix}{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    paths.append(path)
                finally:
                    context.close()
        finally:
            browser.close()
    return paths


def _router(images_off: bool) -> Callable[[Any, Any], None]:
    def handle(route: Any, request: Any) -> None:
        url = request.url
        if images_off and request.resource_type == "image":
            route.abort("blockedbyclient")
        elif _is_loopback_url(url):
            route.continue_()
        elif request.resource_type == "image":
            log.debug("screenshot: placeholder for %s", url)
            route.fulfill(status=200, content_type="image/png", body=_PLACEHOLDER_PNG)
        else:
            log.debug("screenshot: blocked %s", url)
            route.abort("blockedbyclient")

    return handle


def _is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _png(width: int, height: int, rgb: Rgb) -> bytes:
    """A tiny solid-colour PNG (no imaging library needed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


_PLACEHOLDER_PNG = _png(16, 9, (217, 217, 217))
