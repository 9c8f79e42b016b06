"""Builders for WordPress feeds in the shapes labourlist.org serves them: RSS2 (`/feed/`), and
Atom 1.0 (`/feed/atom/`) and RSS 1.0 RDF (`/feed/rdf/`) from the same `Post`s.

The shape follows WordPress's `feed-rss2.php` (as seen on the site): channel title, atom:link,
link, description, lastBuildDate, sy:* and generator; per item a `title` that is entity-encoded
and not CDATA (&#8217; &#8211; &#038;), `link`, `comments`, `dc:creator` in CDATA, `pubDate`
with "+0000", one `category` (CDATA) per category and tag, `guid isPermaLink="false"` of the form
https://labourlist.org/?p=ID, `description` (excerpt + Yoast footer, CDATA), `content:encoded`
(CDATA), `wfw:commentRss` and `slash:comments`. Tabs and blank lines as WordPress prints them.

`RECORDED_PAGE` is a page written out verbatim in that shape (fictional posts), for tests that
want literal XML rather than a builder's output.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SITE = "https://labourlist.org"
FEED = f"{SITE}/feed/"

NAMESPACES = (
    ' xmlns:content="http://purl.org/rss/1.0/modules/content/"\n'
    '\txmlns:wfw="http://wellformedweb.org/CommentAPI/"\n'
    '\txmlns:dc="http://purl.org/dc/elements/1.1/"\n'
    '\txmlns:atom="http://www.w3.org/2005/Atom"\n'
    '\txmlns:sy="http://purl.org/rss/1.0/modules/syndication/"\n'
    '\txmlns:slash="http://purl.org/rss/1.0/modules/slash/"\n'
)

# What wptexturize + ent2ncr turn into numeric references in the_title_rss().
_TITLE_REFS = {"&": "&#038;", "<": "&lt;", ">": "&gt;", "‘": "&#8216;", "’": "&#8217;",
               "“": "&#8220;", "”": "&#8221;", "–": "&#8211;", "—": "&#8212;", "…": "&#8230;"}


def wp_title(text: str) -> str:
    """A title encoded the way WordPress prints it in RSS2 (entities, never CDATA)."""
    return "".join(_TITLE_REFS.get(ch, ch) for ch in text)


def cdata(text: str) -> str:
    """Wrap in CDATA, splitting any "]]>" inside as WordPress's feeds do not (but XML needs)."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def rfc822(instant: datetime) -> str:
    """pubDate as WordPress writes it: always GMT with "+0000"."""
    return instant.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "post"


def yoast_footer(title: str, link: str) -> str:
    return (f'<p>The post <a href="{link}">{wp_title(title)}</a> appeared first on '
            f'<a href="{SITE}">LabourList</a>.</p>\n')


@dataclass
class Post:
    """One WordPress post; unset parts get realistic defaults."""

    id: int
    title: str
    published: datetime
    author: str = "LabourList staff"
    categories: Sequence[str] = ("News",)
    excerpt: str = ""
    paragraphs: Sequence[str] = field(default_factory=list)
    image: str | None = None
    content: str | None = None  # raw content:encoded HTML, replaces paragraphs/image
    description: str | None = None  # raw description HTML, replaces excerpt + Yoast footer
    link: str | None = None
    guid: str | None = None
    raw_title: str | None = None  # put inside <title> verbatim (already encoded)
    modified: datetime | None = None  # Atom's <updated> (an edit); defaults to `published`

    @property
    def url(self) -> str:
        if self.link is not None:
            return self.link
        return f"{SITE}/{self.published:%Y/%m}/{slugify(self.title)}/"

    @property
    def guid_value(self) -> str:
        return self.guid if self.guid is not None else f"{SITE}/?p={self.id}"

    def excerpt_text(self) -> str:
        return self.excerpt or f"{self.title}: the story so far, and what happens next."

    def content_html(self) -> str:
        if self.content is not None:
            return self.content
        paragraphs = list(self.paragraphs) or [
            self.excerpt_text(),
            "Labour activists, trade unionists and councillors told LabourList they wanted "
            "to see the detail before the next round of talks.",
        ]
        parts: list[str] = []
        if self.image:
            parts.append(
                f'<figure class="wp-block-image size-large"><img decoding="async" '
                f'width="1024" height="576" src="{self.image}" alt="" '
                f'class="wp-image-{self.id + 1}" /><figcaption>Photo: LabourList</figcaption>'
                "</figure>\n"
            )
        parts.extend(f"<p>{p}</p>\n" for p in paragraphs)
        return "\n".join(parts)

    def description_html(self) -> str:
        if self.description is not None:
            return self.description
        return f"<p>{self.excerpt_text()} [&#8230;]</p>\n" + yoast_footer(self.title, self.url)


_ITEM_ELEMENTS = ("title", "link", "comments", "creator", "pubDate", "categories", "guid",
                  "description", "content", "commentRss", "slash")


def item_xml(post: Post, *, shuffle_with: random.Random | None = None) -> str:
    """One <item>; `shuffle_with` reorders its elements (older WordPress/plugins vary it)."""
    title = post.raw_title if post.raw_title is not None else wp_title(post.title)
    parts = {
        "title": f"\t\t<title>{title}</title>\n",
        "link": f"\t\t<link>{post.url}</link>\n",
        "comments": f"\t\t\t\t\t<comments>{post.url}#respond</comments>\n\t\t\n",
        "creator": f"\t\t<dc:creator>{cdata(post.author)}</dc:creator>\n",
        "pubDate": f"\t\t<pubDate>{rfc822(post.published)}</pubDate>\n",
        "categories": "".join(f"\t\t\t\t<category>{cdata(c)}</category>\n"
                              for c in post.categories),
        "guid": f'\t\t<guid isPermaLink="false">{post.guid_value}</guid>\n\n',
        "description": f"\t\t\t\t\t<description>{cdata(post.description_html())}</description>\n",
        "content": f"\t\t\t\t\t\t\t\t\t\t<content:encoded>{cdata(post.content_html())}"
                   "</content:encoded>\n\t\t\t\t\t\n",
        "commentRss": f"\t\t\t\t\t<wfw:commentRss>{post.url}feed/</wfw:commentRss>\n",
        "slash": "\t\t\t<slash:comments>0</slash:comments>\n\t\t\n\t\t\n\t\t\n",
    }
    order = list(_ITEM_ELEMENTS)
    if shuffle_with is not None:
        shuffle_with.shuffle(order)
    return "\t<item>\n" + "".join(parts[name] for name in order) + "\t\t\t</item>\n"


def rss(
    posts: Sequence[Post],
    *,
    title: str = "LabourList",
    site: str = SITE,
    last_build: datetime | None = None,
    shuffle_seed: int | None = None,
) -> str:
    """A complete RSS2 page of these posts (newest first, as given)."""
    if last_build is None:
        last_build = max((p.published for p in posts), default=datetime(2026, 11, 1, tzinfo=UTC))
    rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
    items = "".join(item_xml(p, shuffle_with=rng) for p in posts)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"\n\t'
        + NAMESPACES
        + "\t>\n\n<channel>\n"
        f"\t<title>{wp_title(title)}</title>\n"
        f'\t<atom:link href="{site}/feed/" rel="self" type="application/rss+xml" />\n'
        f"\t<link>{site}</link>\n"
        "\t<description>Britain&#039;s biggest independent grassroots e-network for Labour "
        "supporters</description>\n"
        f"\t<lastBuildDate>{rfc822(last_build)}</lastBuildDate>\n"
        "\t<language>en-GB</language>\n"
        "\t<sy:updatePeriod>\n\thourly\t</sy:updatePeriod>\n"
        "\t<sy:updateFrequency>\n\t1\t</sy:updateFrequency>\n"
        "\t<generator>https://wordpress.org/?v=6.7.1</generator>\n\n"
        "<image>\n"
        f"\t<url>{site}/wp-content/uploads/2021/03/cropped-favicon-32x32.png</url>\n"
        f"\t<title>{wp_title(title)}</title>\n\t<link>{site}</link>\n"
        "\t<width>32</width>\n\t<height>32</height>\n</image> \n"
        + items
        + "\t</channel>\n</rss>\n"
    )


def posts_every(
    start_id: int, newest: datetime, count: int, every: timedelta, **kwargs: object
) -> list[Post]:
    """`count` posts, newest first, `every` apart, with distinct ids, titles and links."""
    return [
        Post(id=start_id - n, title=f"Story {start_id - n}: councils and unions respond",
             published=newest - n * every, **kwargs)  # type: ignore[arg-type]
        for n in range(count)
    ]


# A page written out literally, in the exact whitespace and element order of WordPress 6.x with
# Yoast and Jetpack (stats pixel at the end of content). Posts are fictional; dates fall in the
# window of the conftest clock (2026-11-26 06:00 UTC).
RECORDED_PAGE = """<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/"
	>

<channel>
	<title>LabourList</title>
	<atom:link href="https://labourlist.org/feed/" rel="self" type="application/rss+xml" />
	<link>https://labourlist.org</link>
	<description>Britain&#039;s biggest independent grassroots e-network for Labour supporters</description>
	<lastBuildDate>Wed, 25 Nov 2026 21:04:00 +0000</lastBuildDate>
	<language>en-GB</language>
	<sy:updatePeriod>
	hourly	</sy:updatePeriod>
	<sy:updateFrequency>
	1	</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.7.1</generator>
	<item>
		<title>Councils&#8217; funding gap &#8211; what the settlement means for Northbridge &#038; Eastmoor</title>
		<link>https://labourlist.org/2026/11/councils-funding-gap-northbridge-eastmoor/</link>
					<comments>https://labourlist.org/2026/11/councils-funding-gap-northbridge-eastmoor/#respond</comments>

		<dc:creator><![CDATA[Hannah Okafor, Tom Ashworth & Leila Haddad]]></dc:creator>
		<pubDate>Wed, 25 Nov 2026 21:04:00 +0000</pubDate>
				<category><![CDATA[Analysis]]></category>
		<category><![CDATA[Local government]]></category>
		<guid isPermaLink="false">https://labourlist.org/?p=140211</guid>

					<description><![CDATA[<p>Labour council leaders in Northbridge and Eastmoor say this year&#8217;s settlement leaves a &#163;38m gap in adult social care &#8211; and they want ministers to close it before April. [&#8230;]</p>
<p>The post <a href="https://labourlist.org/2026/11/councils-funding-gap-northbridge-eastmoor/">Councils&#8217; funding gap &#8211; what the settlement means for Northbridge &#038; Eastmoor</a> appeared first on <a href="https://labourlist.org">LabourList</a>.</p>
]]></description>
										<content:encoded><![CDATA[<figure class="wp-block-image size-large"><img loading="lazy" decoding="async" width="1024" height="576" src="https://labourlist.org/wp-content/uploads/2026/11/town-hall-1024x576.jpg" alt="Northbridge town hall" class="wp-image-140212" srcset="https://labourlist.org/wp-content/uploads/2026/11/town-hall-1024x576.jpg 1024w, https://labourlist.org/wp-content/uploads/2026/11/town-hall-300x169.jpg 300w" sizes="(max-width: 1024px) 100vw, 1024px" /><figcaption class="wp-element-caption">Northbridge town hall</figcaption></figure>
<p>Labour council leaders in Northbridge and Eastmoor say this year&#8217;s settlement leaves a &#163;38m gap in adult social care.</p>
<h2 class="wp-block-heading">&#8220;We can&#8217;t cut our way out&#8221;</h2>
<p>Cllr Ruth Adeyemi told LabourList: &#8220;We have protected frontline services for three years. We can&#8217;t do it a fourth time.&#8221;</p>
<img src="https://pixel.wp.com/b.gif?host=labourlist.org&#038;blog=1&#038;post=140211&#038;subd=labourlist&#038;ref=&#038;feed=1" width="1" height="1" alt="" style="display:none" />]]></content:encoded>

					<wfw:commentRss>https://labourlist.org/2026/11/councils-funding-gap-northbridge-eastmoor/feed/</wfw:commentRss>
			<slash:comments>0</slash:comments>


			</item>
		<item>
		<title>Good morning: the care deal unions waited a decade for</title>
		<link>https://labourlist.org/2026/11/good-morning-care-deal/</link>
					<comments>https://labourlist.org/2026/11/good-morning-care-deal/#respond</comments>

		<dc:creator><![CDATA[LabourList]]></dc:creator>
		<pubDate>Wed, 25 Nov 2026 18:15:00 +0000</pubDate>
				<category><![CDATA[Daily email]]></category>
		<guid isPermaLink="false">https://labourlist.org/?p=140190</guid>

					<description><![CDATA[<p>Good morning. Here is today&#8217;s round-up. [&#8230;]</p>
]]></description>
										<content:encoded><![CDATA[<p>Good morning. Here is today&#8217;s round-up.</p>
]]></content:encoded>

			<slash:comments>0</slash:comments>


			</item>
		<item>
		<title>Unions back &#8216;landmark&#8217; fair pay agreement for care workers</title>
		<link>https://labourlist.org/2026/11/unions-back-fair-pay-agreement-care/</link>
					<comments>https://labourlist.org/2026/11/unions-back-fair-pay-agreement-care/#respond</comments>

		<dc:creator><![CDATA[Daniel Price]]></dc:creator>
		<pubDate>Wed, 25 Nov 2026 16:30:00 +0000</pubDate>
				<category><![CDATA[News]]></category>
		<category><![CDATA[Trade unions]]></category>
		<guid isPermaLink="false">https://labourlist.org/?p=140205</guid>

					<description><![CDATA[<p>Care sector unions welcomed the agreement, which covers 1.5 million care workers in England. [&#8230;]</p>
<p>The post <a href="https://labourlist.org/2026/11/unions-back-fair-pay-agreement-care/">Unions back &#8216;landmark&#8217; fair pay agreement for care workers</a> appeared first on <a href="https://labourlist.org">LabourList</a>.</p>
]]></description>
										<content:encoded><![CDATA[<p>Care sector unions welcomed the agreement, which covers 1.5 million care workers in England.</p>
<p>The deal sets a floor for pay and sick pay across the sector for the first time.</p>
]]></content:encoded>

					<wfw:commentRss>https://labourlist.org/2026/11/unions-back-fair-pay-agreement-care/feed/</wfw:commentRss>
			<slash:comments>3</slash:comments>


			</item>
	</channel>
</rss>
"""  # noqa: E501


# ---- Atom 1.0 and RSS 1.0 (RDF), as WordPress's feed-atom.php and feed-rdf.php print them ----

ATOM_FEED = f"{SITE}/feed/atom/"
RDF_FEED = f"{SITE}/feed/rdf/"


def iso8601(instant: datetime) -> str:
    """Atom and RDF dates as WordPress writes them: UTC with a literal "Z"."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _attr(text: str) -> str:
    """esc_attr(): what WordPress does to a category name inside term="..."."""
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def atom_entry_xml(post: Post, site: str = SITE) -> str:
    """One <entry>: author/name, title type="html" (CDATA of the RSS-encoded title), the
    alternate link, the guid as <id>, <updated> (last edit) and <published>, one
    <category term> per category and tag, summary and content type="html" (CDATA), and the
    two rel="replies" links WordPress adds when comments are open."""
    title = post.raw_title if post.raw_title is not None else wp_title(post.title)
    categories = "".join(f'<category scheme="{site}" term="{_attr(c)}" />'
                         for c in post.categories)
    modified = post.modified or post.published
    return (
        "\t<entry>\n\t\t<author>\n"
        f"\t\t\t<name>{_attr(post.author)}</name>\n\t\t\t\t\t</author>\n\n"
        f'\t\t<title type="html">{cdata(title)}</title>\n'
        f'\t\t<link rel="alternate" type="text/html" href="{post.url}" />\n\n'
        f"\t\t<id>{post.guid_value}</id>\n"
        f"\t\t<updated>{iso8601(modified)}</updated>\n"
        f"\t\t<published>{iso8601(post.published)}</published>\n"
        f"\t\t{categories}\n"
        f'\t\t<summary type="html">{cdata(post.description_html())}</summary>\n\n'
        f'\t\t\t\t\t<content type="html" xml:base="{post.url}">'
        f"{cdata(post.content_html())}</content>\n\t\t\n"
        f'\t\t\t\t\t<link rel="replies" type="text/html" href="{post.url}#comments" '
        'thr:count="0" />\n'
        f'\t\t\t<link rel="replies" type="application/atom+xml" href="{post.url}feed/atom/" '
        'thr:count="0" />\n'
        "\t\t\t<thr:total>0</thr:total>\n\t\t\t</entry>\n"
    )


def atom(posts: Sequence[Post], *, title: str = "LabourList", site: str = SITE) -> str:
    """A complete Atom 1.0 page of these posts (newest first, as given), as `/feed/atom/`."""
    updated = max((p.modified or p.published for p in posts),
                  default=datetime(2026, 11, 1, tzinfo=UTC))
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed\n'
        '  xmlns="http://www.w3.org/2005/Atom"\n'
        '  xmlns:thr="http://purl.org/syndication/thread/1.0"\n'
        '  xml:lang="en-GB"\n'
        f'  xml:base="{site}/wp-atom.php"\n'
        "   >\n"
        f'\t<title type="text">{wp_title(title)}</title>\n'
        '\t<subtitle type="text">Britain&#039;s biggest independent grassroots e-network for '
        "Labour supporters</subtitle>\n\n"
        f"\t<updated>{iso8601(updated)}</updated>\n\n"
        f'\t<link rel="alternate" type="text/html" href="{site}" />\n'
        f"\t<id>{site}/feed/atom/</id>\n"
        f'\t<link rel="self" type="application/atom+xml" href="{site}/feed/atom/" />\n\n'
        '\t<generator uri="https://wordpress.org/" version="6.7.1">WordPress</generator>\n'
        + "".join(atom_entry_xml(p, site) for p in posts)
        + "</feed>\n"
    )


def rdf_item_xml(post: Post) -> str:
    """One RSS 1.0 <item>: no guid (its identity is rdf:about, the permalink), dc:date,
    dc:creator, one dc:subject per category and tag, the excerpt and content:encoded."""
    title = post.raw_title if post.raw_title is not None else wp_title(post.title)
    subjects = "".join(f"\t\t<dc:subject>{cdata(c)}</dc:subject>\n" for c in post.categories)
    return (
        f'<item rdf:about="{post.url}">\n'
        f"\t<title>{title}</title>\n"
        f"\t<link>{post.url}</link>\n"
        f"\t <dc:date>{iso8601(post.published)}</dc:date>\n"
        f"\t<dc:creator>{cdata(post.author)}</dc:creator>\n"
        + subjects
        + f"\t<description>{cdata(post.description_html())}</description>\n"
        f"\t<content:encoded>{cdata(post.content_html())}</content:encoded>\n"
        "\t</item>\n"
    )


def rdf(posts: Sequence[Post], *, title: str = "LabourList", site: str = SITE) -> str:
    """A complete RSS 1.0 (RDF) page of these posts (newest first, as given), as `/feed/rdf/`."""
    updated = max((p.published for p in posts), default=datetime(2026, 11, 1, tzinfo=UTC))
    seq = "".join(f'\t\t\t<rdf:li rdf:resource="{p.url}"/>\n' for p in posts)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rdf:RDF\n'
        '\txmlns="http://purl.org/rss/1.0/"\n'
        '\txmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
        '\txmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '\txmlns:sy="http://purl.org/rss/1.0/modules/syndication/"\n'
        '\txmlns:admin="http://webns.net/mvcb/"\n'
        '\txmlns:content="http://purl.org/rss/1.0/modules/content/"\n'
        "\t>\n"
        f'<channel rdf:about="{site}">\n'
        f"\t<title>{wp_title(title)}</title>\n"
        f"\t<link>{site}</link>\n"
        "\t<description>Britain&#039;s biggest independent grassroots e-network for Labour "
        "supporters</description>\n"
        f"\t<dc:date>{iso8601(updated)}</dc:date>\n"
        '\t<admin:generatorAgent rdf:resource="https://wordpress.org/?v=6.7.1" />\n'
        "\t<sy:updatePeriod>hourly</sy:updatePeriod>\n"
        "\t<sy:updateFrequency>1</sy:updateFrequency>\n"
        "\t<sy:updateBase>2000-01-01T12:00+00:00</sy:updateBase>\n"
        "\t<items>\n\t\t<rdf:Seq>\n" + seq + "\t\t</rdf:Seq>\n\t</items>\n</channel>\n"
        + "".join(rdf_item_xml(p) for p in posts)
        + "</rdf:RDF>\n"
    )
