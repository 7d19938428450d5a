"""The `sitemap` source: review pages found in a site's sitemap (or sitemap index).

A page is fetched when it is new, when its `lastmod` changed, when it failed last time,
or, for pages without a `lastmod`, with a conditional GET (If-None-Match /
If-Modified-Since), which costs the site nothing when the page is unchanged. At most
`max_pages` pages are fetched per run, so a big site's first run is spread over several:
every matching page listed is remembered when the sitemap is read, and the ones not
fetched yet are fetched on later runs even while the sitemap answers 304.

A source's whole poll is bounded by a time budget (BUDGET_TIMEOUTS x its `timeout`);
what is left when it runs out waits for the next run.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from urllib.parse import urljoin

from lxml import etree

from syndicate.config import SitemapSource
from syndicate.sources.article import NoArticle, extract_article
from syndicate.sources.http import PAGE_WORKERS, Fetcher, FetchError, ungzip
from syndicate.sources.ingest import one_line
from syndicate.sources.poll import PageResult, PageState, Poll, Snapshot

log = logging.getLogger(__name__)

XML_ACCEPT = "application/xml, text/xml;q=0.9, */*;q=0.1"
HTML_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
MAX_CHILD_SITEMAPS = 100
# The sitemap protocol's own limit per sitemap (uncompressed); the source's `max_bytes`
# applies to sitemaps only when it is set in the YAML. Pages keep `max_bytes`.
SITEMAP_MAX_BYTES = 50_000_000
BUDGET_TIMEOUTS = 6  # a source's whole poll may take this many times its `timeout`
URL_LIMIT = 2000  # SourcePage.url and Review.url hold 2,000 characters
LASTMOD_LIMIT = 100  # SourcePage.lastmod


class NotASitemap(ValueError):
    pass


def parse_sitemap(data: bytes, url: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """([(page URL, lastmod)], [child sitemap URLs]) from a urlset or a sitemapindex.
    Read as a stream, each <url> dropped once read: a 50 MB sitemap stays small."""
    pages: list[tuple[str, str | None]] = []
    children: list[str] = []
    kind = ""
    events = etree.iterparse(
        BytesIO(data),
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
    )
    depth = 0
    try:
        for event, element in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    kind = etree.QName(element).localname
                    if kind not in ("urlset", "sitemapindex"):
                        raise NotASitemap(f"not a sitemap: the document is <{kind}>, not <urlset>")
                continue
            depth -= 1
            if depth != 1 or not isinstance(element.tag, str):
                continue
            values = {
                etree.QName(child).localname: (child.text or "").strip()
                for child in element
                if isinstance(child.tag, str)
            }
            element.clear()
            while element.getprevious() is not None:
                del element.getparent()[0]
            loc = values.get("loc")
            if not loc:
                continue
            loc = urljoin(url, loc)
            if kind == "sitemapindex":
                children.append(loc)
            else:
                pages.append((loc, (values.get("lastmod") or "")[:LASTMOD_LIMIT] or None))
    except etree.XMLSyntaxError as exc:
        head = data[:2000].lower()
        if b"<html" in head or b"<!doctype html" in head:
            raise NotASitemap("not a sitemap: an HTML page") from None
        raise NotASitemap(f"not a sitemap: malformed XML: {exc}") from None
    if not kind:
        raise NotASitemap("not a sitemap: the document is empty")
    return pages, children


def sitemap_cap(source: SitemapSource) -> int:
    """Bytes a sitemap may have: `max_bytes` when the YAML sets it, else 50 MB."""
    if "max_bytes" in source.model_fields_set:
        return source.max_bytes
    return max(SITEMAP_MAX_BYTES, source.max_bytes)


class _Budget:
    def __init__(self, source: SitemapSource) -> None:
        self.seconds = source.timeout * BUDGET_TIMEOUTS
        self.until = time.monotonic() + self.seconds
        self.timeout = source.timeout

    def left(self) -> float:
        return self.until - time.monotonic()

    def request_timeout(self) -> float | None:
        """The time one request may take now; None once the budget is spent."""
        left = self.left()
        return min(self.timeout, left) if left > 0.05 else None


def poll_sitemap(fetcher: Fetcher, source: SitemapSource, snapshot: Snapshot) -> Poll:
    poll = Poll()
    budget = _Budget(source)
    try:
        top = fetcher.get(
            snapshot.url,
            accept=XML_ACCEPT,
            timeout=source.timeout,
            max_bytes=sitemap_cap(source),
            etag=snapshot.etag,
            last_modified=snapshot.last_modified,
            origin=source.url,
        )
    except FetchError as exc:
        return Poll(error=str(exc))
    poll.etag, poll.last_modified, poll.moved_to = top.etag, top.last_modified, top.moved_to
    if top.not_modified:
        # The list is as it was: recheck what needs it from the pages remembered,
        # those listed but not fetched yet included.
        poll.not_modified = True
        wanted = [(url, state.lastmod) for url, state in snapshot.pages.items()]
    else:
        try:
            complete, listed = _listing(fetcher, source, top.content, top.url, poll, budget)
        except (NotASitemap, FetchError) as exc:
            return Poll(error=str(exc))
        if not complete:
            # A child sitemap was not read: read the index again next run, not a 304.
            poll.etag = poll.last_modified = None
        wanted, too_long = [], []
        for url, lastmod in dict(listed).items():
            if not source.matches(url):
                continue
            if len(url) > URL_LIMIT:
                too_long.append(url)
            else:
                wanted.append((url, lastmod))
        if too_long:
            poll.warnings.append(
                f"{len(too_long)} page URL(s) longer than {URL_LIMIT:,} characters skipped "
                f"(the first: {too_long[0][:80]}...)"
            )
        poll.listed = wanted
    due = _due(wanted, snapshot.pages)[: source.max_pages]
    if due:
        workers = min(PAGE_WORKERS, len(due))
        with ThreadPoolExecutor(workers, thread_name_prefix="page") as pool:
            results = list(
                pool.map(lambda item: _page(fetcher, source, snapshot, budget, *item), due)
            )
        poll.pages = [result for result in results if result is not None]
        left = len(results) - len(poll.pages)
        if left:
            poll.warnings.append(
                f"time budget of {budget.seconds:g} s used up: {left} page(s) left for the next run"
            )
    # Pages listed but not due are remembered as they are (a new lastmod is stored
    # only once the page behind it was read).
    return poll


def _listing(
    fetcher: Fetcher,
    source: SitemapSource,
    content: bytes,
    url: str,
    poll: Poll,
    budget: _Budget,
) -> tuple[bool, list[tuple[str, str | None]]]:
    """(whether every child sitemap was read, the pages listed)."""
    cap = sitemap_cap(source)
    pages, children = parse_sitemap(ungzip(content, cap), url)
    complete = True
    if len(children) > MAX_CHILD_SITEMAPS:
        poll.warnings.append(
            f"the sitemap index lists {len(children)} sitemaps; "
            f"only the first {MAX_CHILD_SITEMAPS} are read"
        )
    for child in children[:MAX_CHILD_SITEMAPS]:
        timeout = budget.request_timeout()
        if timeout is None:
            poll.warnings.append(
                f"time budget of {budget.seconds:g} s used up while reading the sitemaps"
            )
            return False, pages
        try:
            fetched = fetcher.get(
                child, accept=XML_ACCEPT, timeout=timeout, max_bytes=cap, origin=source.url
            )
            more, nested = parse_sitemap(ungzip(fetched.content, cap), fetched.url)
        except (NotASitemap, FetchError) as exc:
            # One broken child sitemap hides only its own pages, until the next run.
            problem = str(exc)
            if timeout < source.timeout and budget.left() <= 0:
                problem = f"time budget of {budget.seconds:g} s used up"
            poll.warnings.append(f"{child}: {problem}")
            complete = False
            continue
        if nested:
            poll.warnings.append(f"{child}: a sitemap index inside an index is not followed")
        pages.extend(more)
    return complete, pages


def _due(
    listed: list[tuple[str, str | None]], known: dict[str, PageState]
) -> list[tuple[str, str | None]]:
    """The pages to fetch this run, most needed first: new, changed, failed, then the
    pages without lastmod (a conditional GET each)."""
    new, changed, unknown = [], [], []
    for url, lastmod in listed:
        state = known.get(url)
        if state is None or not state.fetched:
            new.append((url, lastmod))
        elif state.error or (lastmod and lastmod != state.lastmod):
            changed.append((url, lastmod))
        elif not lastmod:
            unknown.append((url, lastmod))
    return new + changed + unknown


def _page(
    fetcher: Fetcher,
    source: SitemapSource,
    snapshot: Snapshot,
    budget: _Budget,
    url: str,
    lastmod: str | None,
) -> PageResult | None:
    """The page fetched and read; None when the source's time budget is spent."""
    timeout = budget.request_timeout()
    if timeout is None:
        return None
    state = snapshot.pages.get(url)
    # Validators only when nothing says the page changed (and it did not fail last time).
    conditional = (
        state is not None
        and state.fetched
        and not state.error
        and (not lastmod or lastmod == state.lastmod)
    )
    result = PageResult(url=url, lastmod=lastmod)
    try:
        fetched = fetcher.get(
            url,
            accept=HTML_ACCEPT,
            timeout=timeout,
            max_bytes=source.max_bytes,
            etag=state.etag if conditional and state else None,
            last_modified=state.last_modified if conditional and state else None,
            origin=source.url,
        )
    except FetchError as exc:
        if timeout < source.timeout and budget.left() <= 0:
            return None  # cut short by the budget, not the page's fault: next run
        result.error = str(exc)
        return result
    result.etag, result.last_modified = fetched.etag, fetched.last_modified
    if fetched.not_modified:
        return result
    result.fetched = True
    try:
        result.entry = extract_article(fetched.content, url, source.zone)
    except NoArticle as exc:
        result.error = str(exc)
    except Exception as exc:  # trafilatura on a page nobody anticipated: that page only
        log.exception("extracting %s", url)
        result.error = f"extraction failed: {one_line(exc)}"
    return result
