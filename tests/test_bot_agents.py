"""Scanner user agents (mailer/clicks/classify.py `is_bot`): the same verdict as
crawlerdetect's own `is_crawler` for browsers of every build, mail scanners, crawlers and HTTP
libraries, while remembering the costly search by what is left after its exclusions."""

from __future__ import annotations

import pytest
from crawlerdetect import CrawlerDetect

from mailer.clicks import classify

BROWSERS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_{n} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.{n} Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.{n} Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0.{n}",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{n} Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.{n} Safari/537.36 Edg/119.0.2151.{n}",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.{n}.0 Safari/537.36 OPR/105.0.0.{n}",
    "Mozilla/5.0 (iPad; CPU OS 16_{n} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",  # (Apple Mail's web view)
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.{n} Chrome/115.0.0.0 Mobile Safari/537.36",
]
MACHINES = [
    # Outlook's own fetches of a link (its preview and protocol checks): the reader's click
    # opens their browser, which comes with a browser's user agent.
    "Outlook-iOS/709.2226{n}.prod.iphone (4.2{n}.0)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.1{n}; Pro)",
    "Mozilla/5.0 (compatible; Googlebot/2.{n}; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.{n}; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/41.0.2272.{n} Safari/537.36 (compatible; Google-Read-Aloud)",
    "curl/8.{n}.0",
    "python-requests/2.3{n}.0",
    "Wget/1.2{n}",
    "Go-http-client/1.{n}",
    "Java/1.8.0_{n}",
    "okhttp/4.{n}.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.{n} (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
    "Mozilla/5.0 (compatible; YandexBot/3.{n}; +http://yandex.com/bots)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.{n} Safari/537.36",
    "HeadlessChrome/120.0.6099.{n}",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.{n} Safari/537.36",
]


@pytest.mark.parametrize("template", BROWSERS + MACHINES)
def test_the_verdict_is_crawlerdetects_for_every_build(template: str) -> None:
    detector = CrawlerDetect()
    for n in range(0, 40, 7):
        agent = template.format(n=n)
        assert classify.is_bot(agent) == detector.is_crawler(agent), agent


def test_browsers_are_readers_and_machines_are_not() -> None:
    assert not any(classify.is_bot(t.format(n=3)) for t in BROWSERS)
    assert all(classify.is_bot(t.format(n=3)) for t in MACHINES)
    assert classify.is_bot("") and classify.is_bot("   ")  # (no user agent: a machine)


def test_a_new_build_of_a_known_browser_costs_no_new_search() -> None:
    template = BROWSERS[1]
    classify.is_bot(template.format(n=1001))
    searched = classify._crawler_in.cache_info().misses
    for n in range(1002, 1050):
        assert not classify.is_bot(template.format(n=n))
    assert classify._crawler_in.cache_info().misses == searched
