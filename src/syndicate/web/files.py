"""The output folder (feeds, archive pages) served as static files, as a reader app or a
browser expects them: ETag and Last-Modified with 304 for a matching conditional GET
(Starlette's StaticFiles), feed content types, and short caching so WebSub-less readers
still see a new review within minutes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Feed files by what they begin with: feed.xml and archive pages share a suffix.
XML_KINDS = ((b"<rss", "application/rss+xml"), (b"<feed", "application/atom+xml"))
CACHE_SECONDS = 300


def feed_media_type(path: Path) -> str | None:
    """The media type a feed reader expects for this file, or None for other files."""
    if path.suffix not in (".xml", ".json"):
        return None
    with path.open("rb") as handle:
        head = handle.read(1024)
    if path.suffix == ".json":
        return "application/feed+json" if b"jsonfeed.org/version/" in head else None
    start = head.find(b"<", head.find(b"?>") + 1 if b"?>" in head else 0)
    # Skip comments and stylesheet instructions before the root element.
    while head.startswith(b"<!--", start) or head.startswith(b"<?", start):
        end = head.find(b">", start)
        start = head.find(b"<", end + 1) if end >= 0 else len(head)
    for prefix, media_type in XML_KINDS:
        if head.startswith(prefix, start):
            return media_type
    return "application/xml"


class OutputFiles(StaticFiles):
    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = feed_media_type(Path(full_path))
        if media_type is not None:
            charset = "" if media_type.endswith("json") else "; charset=utf-8"
            response.headers["content-type"] = media_type + charset
        response.headers.setdefault("cache-control", f"public, max-age={CACHE_SECONDS}")
        return response
