"""The bundled sample feed and subscribers behind `mailer demo`.

The demo must run offline and still exercise the real pipeline, so this writes a feed in the exact
shape WordPress serves labourlist.org's RSS2 (entity-encoded titles, CDATA bylines and bodies,
"+0000" dates, `?p=ID` guids, Yoast's footer, a "Daily email" post that must be skipped) and
dates every post inside the edition window that ends at `now`. The stories and people are
fictional.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

SITE = "https://labourlist.org"

SAMPLE_SUBSCRIBERS: list[tuple[str, str]] = [
    ("sian.demo@example.org", "Siân Evans"),
    ("amir.demo@example.org", "Amir Hussain"),
    ("grace.demo@example.org", "Grace O'Neill"),
    ("tomasz.demo@example.org", "Tomasz Nowak"),
    ("beth.demo@example.org", "Beth Carter"),
]

# wptexturize's curly punctuation and ent2ncr's "&#038;": how WordPress prints titles in RSS2.
_TITLE_REFS = {"&": "&#038;", "<": "&lt;", ">": "&gt;", "‘": "&#8216;", "’": "&#8217;",
               "“": "&#8220;", "”": "&#8221;", "–": "&#8211;", "—": "&#8212;", "…": "&#8230;"}


@dataclass(frozen=True)
class _Post:
    post_id: int
    hours_ago: float
    title: str
    author: str
    categories: tuple[str, ...]
    excerpt: str
    paragraphs: tuple[str, ...]
    image: str = ""


_POSTS: tuple[_Post, ...] = (
    _Post(
        141020, 0.75,
        "Care workers’ unions hail “landmark” fair pay deal – but warn the detail matters",
        "Hannah Okafor", ("News", "Trade unions", "Social care"),
        "Unions representing care workers in England have welcomed the first sector-wide fair "
        "pay agreement, but say ministers must fund councils to deliver it.",
        (
            "Unions representing care workers in England have welcomed the first sector-wide "
            "fair pay agreement, but say ministers must fund councils to deliver it.",
            "The Care Workers’ Alliance, a fictional federation of four unions, said the deal "
            "would set a floor for pay and sick pay for the first time.",
            "<strong>General secretary Maria Costa</strong> said: “This is what a Labour "
            "government is for. Now it has to reach every pay packet.”",
        ),
        image=f"{SITE}/wp-content/uploads/2026/11/care-workers-rally-1024x576.jpg",
    ),
    _Post(
        141018, 2.0,
        "Northbridge Council’s Labour group unveils £40m plan for 600 council homes",
        "Daniel Price", ("News", "Housing", "Local government"),
        "Labour councillors in the fictional borough of Northbridge have set out plans to "
        "build 600 council homes over five years, funded by borrowing and land sales.",
        (
            "Labour councillors in the fictional borough of Northbridge have set out plans to "
            "build 600 council homes over five years.",
            "Council leader Cllr Ruth Adeyemi said the homes would be let at social rent, with "
            "priority for families in temporary accommodation.",
        ),
        image=f"{SITE}/wp-content/uploads/2026/11/northbridge-homes-1024x576.jpg",
    ),
    _Post(
        141015, 3.5,
        "We can’t win the next election on ‘competence’ alone – here’s what’s missing",
        "Priya Natarajan", ("Comment",),
        "Competence got us into government. It won’t keep us there. Voters need to feel the "
        "difference in their own streets, and soon.",
        (
            "Competence got us into government. It won’t keep us there.",
            "<em>Voters need to feel the difference</em> in their own streets – in bus routes "
            "that run, GP appointments they can get and rents they can pay.",
            "<blockquote><p>“Delivery is a story you have to tell, not just a spreadsheet you "
            "keep.”</p></blockquote>",
        ),
    ),
    _Post(
        141012, 5.0,
        "Polling analysis: where Labour’s 2024 voters have gone – and how to win them back",
        "Tom Ashworth, Leila Haddad & Morgan Reyes", ("Analysis", "Polling"),
        "Our analysis of three fictional polls suggests most lost Labour voters are undecided, "
        "not lost – and that cost of living still decides their vote.",
        (
            "Our analysis of three fictional polls suggests most lost Labour voters are "
            "undecided rather than gone.",
            "<h2>The undecided middle</h2>",
            "Around half of those who have drifted away say they could vote Labour again if "
            "household bills fell.",
            "<ul><li>Cost of living: 61%</li><li>NHS waiting times: 48%</li>"
            "<li>Housing: 33%</li></ul>",
        ),
        image=f"{SITE}/wp-content/uploads/2026/11/polling-chart-1024x576.png",
    ),
    _Post(
        141010, 6.25,
        "Week in Westminster: budgets, by-elections & a very long night in committee",
        "Rhiannon Evans", ("Columnist",),
        "A budget that pleased nobody loudly and most people quietly, a by-election that "
        "wasn’t close, and a committee that sat past midnight.",
        (
            "A budget that pleased nobody loudly and most people quietly.",
            "A by-election that wasn’t close. And a committee room that was still full at "
            "midnight, arguing about bus franchising.",
        ),
    ),
    _Post(
        141007, 7.5,
        "NEC agrees timetable for selecting Labour’s Eastmoor mayoral candidate",
        "Daniel Price", ("News", "NEC"),
        "Labour’s ruling body has agreed that members in the fictional Eastmoor combined "
        "authority will choose their mayoral candidate by February.",
        (
            "Labour’s ruling body has agreed a timetable for selecting the party’s candidate "
            "for the fictional Eastmoor mayoralty.",
            "Nominations open next month, with hustings in each of the five boroughs.",
        ),
    ),
    _Post(
        141004, 9.0,
        "Local government is running on empty – ministers must act before April",
        "Cllr Amara Osei", ("Comment", "Local government"),
        "Councils have cut, shared and sold what they can. Without a multi-year settlement, "
        "the next cuts will fall on services residents can see.",
        (
            "Councils have cut, shared and sold what they can.",
            "Without a multi-year settlement, the next round of cuts will fall on libraries, "
            "youth services and bin collections – the things residents notice.",
        ),
    ),
    _Post(
        141001, 10.5,
        "Minister announces review of bus franchising rules after pressure from metro mayors",
        "Hannah Okafor", ("News", "Transport"),
        "A fictional transport minister has promised to cut the time it takes councils to "
        "bring buses back under public control.",
        (
            "A transport minister has promised to cut the time it takes councils to bring "
            "buses back under public control.",
            "Metro mayors had written to the department warning that the current process "
            "takes up to four years.",
        ),
        image=f"{SITE}/wp-content/uploads/2026/11/bus-depot-1024x576.jpg",
    ),
    _Post(
        140998, 12.0,
        "What the ‘right to switch off’ consultation tells us about the next phase of "
        "workers’ rights",
        "Leila Haddad", ("Analysis", "Workers' rights"),
        "The consultation is narrower than unions hoped but wider than employers feared. "
        "Here is what it covers, and what comes next.",
        (
            "The consultation is narrower than unions hoped but wider than employers feared.",
            "It covers contact outside contracted hours, but leaves enforcement to a future "
            "code of practice.",
        ),
    ),
    _Post(
        140995, 14.0,
        "Organising isn’t nostalgia – it’s how we rebuild trust in our towns",
        "Rhiannon Evans", ("Columnist", "Community organising"),
        "The branch meeting, the door knock and the union rep are not relics. They are how a "
        "party earns the right to be heard between elections.",
        (
            "The branch meeting, the door knock and the union rep are not relics.",
            "They are how a party earns the right to be heard between elections.",
        ),
    ),
    _Post(
        140992, 16.5,
        "Young Labour conference backs motion on housing & renters’ rights",
        "Morgan Reyes", ("News", "Young Labour", "Housing"),
        "Delegates voted for rent controls, a national landlord register and an end to "
        "no-fault evictions in the private rented sector.",
        (
            "Delegates at the fictional Young Labour conference voted for rent controls and a "
            "national landlord register.",
            "The motion passed by a large majority after a debate that ran over time.",
        ),
    ),
    _Post(
        140989, 18.5,
        "Why councils should be trusted to run their own employment support",
        "Cllr Tomás Byrne", ("Comment", "Devolution"),
        "Jobcentres designed in Whitehall struggle to reach the people furthest from work. "
        "Councils already know who they are.",
        (
            "Jobcentres designed in Whitehall struggle to reach the people furthest from work.",
            "Councils already know who they are – and could reach them with the right powers.",
        ),
    ),
    # The emailed round-up itself, as posted to the site: not an article.
    _Post(
        140986, 19.5,
        "Good morning: the care deal unions waited a decade for",
        "LabourList", ("Daily email",),
        "Good morning. Here is what is happening in the labour movement today.",
        ("Good morning. Here is what is happening in the labour movement today.",),
    ),
)


def write_sample_feed(path: Path, now: datetime) -> Path:
    """Write the sample feed to `path` with every post dated in the 20 hours before `now`.

    Twelve articles (News, Comment, Analysis, Columnist; one joint byline; entity-laden titles;
    some with an image) and one "Daily email" post that the collector must skip. Returns `path`.
    """
    if now.tzinfo is None:
        raise ValueError("write_sample_feed needs an aware datetime")
    now = now.astimezone(UTC).replace(microsecond=0)
    items = "".join(_item(post, now - timedelta(hours=post.hours_ago)) for post in _POSTS)
    newest = now - timedelta(hours=min(p.hours_ago for p in _POSTS))
    document = (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"\n'
        '\txmlns:content="http://purl.org/rss/1.0/modules/content/"\n'
        '\txmlns:wfw="http://wellformedweb.org/CommentAPI/"\n'
        '\txmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '\txmlns:atom="http://www.w3.org/2005/Atom"\n'
        '\txmlns:sy="http://purl.org/rss/1.0/modules/syndication/"\n'
        '\txmlns:slash="http://purl.org/rss/1.0/modules/slash/"\n'
        "\t>\n\n<channel>\n"
        "\t<title>LabourList (sample)</title>\n"
        f'\t<atom:link href="{SITE}/feed/" rel="self" type="application/rss+xml" />\n'
        f"\t<link>{SITE}</link>\n"
        "\t<description>Britain&#039;s biggest independent grassroots e-network for Labour "
        "supporters</description>\n"
        f"\t<lastBuildDate>{_rfc822(newest)}</lastBuildDate>\n"
        "\t<language>en-GB</language>\n"
        "\t<sy:updatePeriod>\n\thourly\t</sy:updatePeriod>\n"
        "\t<sy:updateFrequency>\n\t1\t</sy:updateFrequency>\n"
        "\t<generator>https://wordpress.org/?v=6.7.1</generator>\n"
        f"{items}"
        "\t</channel>\n</rss>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def _item(post: _Post, published: datetime) -> str:
    link = f"{SITE}/{published:%Y/%m}/{_slug(post.title)}/"
    title = _wp_title(post.title)
    body = []
    if post.image:
        body.append(
            '<figure class="wp-block-image size-large"><img loading="lazy" decoding="async" '
            f'width="1024" height="576" src="{post.image}" alt="" '
            f'class="wp-image-{post.post_id + 1}" /></figure>'
        )
    for paragraph in post.paragraphs:
        body.append(paragraph if paragraph.startswith(("<h2", "<ul", "<blockquote"))
                    else f"<p>{paragraph}</p>")
    description = (
        f"<p>{post.excerpt} [&#8230;]</p>\n"
        f'<p>The post <a href="{link}">{title}</a> appeared first on '
        f'<a href="{SITE}">LabourList</a>.</p>\n'
    )
    categories = "".join(f"\t\t<category>{_cdata(c)}</category>\n" for c in post.categories)
    return (
        "\t<item>\n"
        f"\t\t<title>{title}</title>\n"
        f"\t\t<link>{link}</link>\n"
        f"\t\t<comments>{link}#respond</comments>\n"
        f"\t\t<dc:creator>{_cdata(post.author)}</dc:creator>\n"
        f"\t\t<pubDate>{_rfc822(published)}</pubDate>\n"
        f"{categories}"
        f'\t\t<guid isPermaLink="false">{SITE}/?p={post.post_id}</guid>\n'
        f"\t\t<description>{_cdata(description)}</description>\n"
        f"\t\t<content:encoded>{_cdata(chr(10).join(body))}</content:encoded>\n"
        f"\t\t<wfw:commentRss>{link}feed/</wfw:commentRss>\n"
        "\t\t<slash:comments>0</slash:comments>\n"
        "\t</item>\n"
    )


def _wp_title(text: str) -> str:
    return "".join(_TITLE_REFS.get(ch, ch) for ch in text)


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _rfc822(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _slug(title: str) -> str:
    """A WordPress-like post slug: apostrophes dropped, words joined by hyphens."""
    out = []
    for ch in title.lower().replace("’", "").replace("'", ""):
        out.append(ch if ch.isascii() and ch.isalnum() else "-")
    words = [part for part in "".join(out).split("-") if part]
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > 70:
            break
        slug = f"{slug}-{word}" if slug else word
    return slug or "post"
