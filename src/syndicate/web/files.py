"""The output folder (feeds, archive pages) served as static files, as a reader app or a
browser expects them: ETag and Last-Modified with 304 for a matching conditional GET
(Starlette's StaticFiles), feed content types, and short caching so WebSub-less readers
still see a new review within minutes."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
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
    async def get_response(self, path: str, scope: Scope) -> Response:
        # Never a dotfile or dot-folder (.git, .htaccess) of an output folder kept in git.
        if any(part.startswith(".") for part in PurePosixPath(path).parts):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = FileResponse(full_path, status_code=status_code, stat_result=stat_result)
        # One validator serves the plain and the gzip body (GZipMiddleware compresses after
        # this), so it is weak, as RFC 9110 allows for a change of content coding alone.
        response.headers["etag"] = "W/" + response.headers["etag"]
        response.headers["cache-control"] = f"public, max-age={CACHE_SECONDS}"
        media_type = feed_media_type(Path(full_path))
        if media_type is not None:
            charset = "" if media_type.endswith("json") else "; charset=utf-8"
            response.headers["content-type"] = media_type + charset
        request = Headers(scope=scope)
        if self.is_not_modified(response.headers, request):
            response.headers["vary"] = "Accept-Encoding"
            return NotModifiedResponse(response.headers)
        if "gzip" not in request.get("accept-encoding", ""):
            # Otherwise GZipMiddleware says it (and would say it twice).
            response.headers["vary"] = "Accept-Encoding"
        return response

    def is_not_modified(self, response_headers: Headers, request_headers: Headers) -> bool:
        if_none_match = request_headers.get("if-none-match")
        if if_none_match and if_none_match.strip() != "*":
            etag = response_headers["etag"].removeprefix("W/")
            return etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return super().is_not_modified(response_headers, request_headers)
