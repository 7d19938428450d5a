"""Polite, bounded HTTP for remote sources.

Other people's servers are polled on a schedule, so each request says who is asking
(User-Agent), asks only for what changed (If-None-Match / If-Modified-Since), and is
bounded in time and size: one slow or enormous response must not hold up the run or
fill the memory. Every failure becomes a FetchError whose text is one line an operator
can act on ("timed out after 20 s", "HTTP 500 Internal Server Error").

Time: `timeout` bounds the whole fetch, redirects included. Every socket operation
(connect, TLS handshake, each read of the headers or the body) is given only what is
left of it, so a server dribbling its headers a byte at a time is cut off as well.
Only the DNS lookup (getaddrinfo, which cannot be interrupted) is outside that bound.

Size: the body is read raw and inflated here with a cap on the output, so a gzip bomb
costs no more memory than `max_bytes`.

Addresses: a source on a public host may not be redirected (nor, for a sitemap, sent)
to a loopback, private or link-local address; a source configured on such an address
(a test server, an intranet) may move within that space.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from httpcore._backends.sync import SyncBackend

from syndicate import __version__

MAX_REDIRECTS = 10
_PERMANENT = {301, 308}
_REDIRECT = {301, 302, 303, 307, 308}
# Sources fetched at once, and pages of one sitemap fetched at once: the pool holds a
# connection for each, so that no request waits for a free one.
SOURCE_WORKERS = 8
PAGE_WORKERS = 4
ACCEPT_ENCODING = "gzip, deflate"  # what _Inflater handles; no brotli


class FetchError(Exception):
    """The request failed; str() is the reason, one line."""


@dataclass
class Fetched:
    status: int  # 200, or 304 when the validators sent still hold
    url: str  # where the content came from, after redirects
    content: bytes
    content_type: str
    etag: str | None
    last_modified: str | None
    # Set when the requested URL moved for good (only 301/308 hops): poll this next time.
    moved_to: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def user_agent(site_url: str) -> str:
    # Site operators read this in their logs; the URL tells them whose poller it is.
    return f"syndicate/{__version__} (+{site_url})"


# --- the deadline, enforced on every socket operation ------------------------------------

_deadline = threading.local()  # requests run in the calling thread (sync httpx)


def _left(timeout: float | None) -> float | None:
    until = getattr(_deadline, "at", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        kwargs["timeout"] = _left(kwargs.get("timeout"))
        return _DeadlineStream(self._stream.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kw: Any) -> Any:
        return _DeadlineStream(self._backend.connect_tcp(host, port, _left(timeout), **kw))

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kw: Any) -> Any:
        return _DeadlineStream(self._backend.connect_unix_socket(path, _left(timeout), **kw))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


# --- public and private addresses --------------------------------------------------------


def is_private(host: str) -> bool:
    """True when the host is, or resolves to, a loopback, private, link-local or other
    non-public address. A host that does not resolve is not private (the request then
    fails with the DNS error)."""
    host = host.strip("[]")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return False
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return True
    return False


class Fetcher:
    """One connection pool for a run; safe to share between threads."""

    def __init__(
        self, site_url: str, source_workers: int = SOURCE_WORKERS, page_workers: int = PAGE_WORKERS
    ) -> None:
        connections = source_workers * page_workers
        self.client = httpx.Client(
            headers={"User-Agent": user_agent(site_url), "Accept-Encoding": ACCEPT_ENCODING},
            follow_redirects=False,  # followed by hand, to spot loops and permanent moves
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        # Every socket operation gets only what is left of the request's deadline.
        transport = self.client._transport
        assert isinstance(transport, httpx.HTTPTransport)
        transport._pool._network_backend = _DeadlineBackend()
        self._private: dict[str, bool] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def private(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            known = self._private.get(host)
        if known is None:
            known = is_private(host)
            with self._lock:
                self._private[host] = known
        return known

    def get(
        self,
        url: str,
        *,
        accept: str,
        timeout: float,
        max_bytes: int,
        etag: str | None = None,
        last_modified: str | None = None,
        origin: str | None = None,
    ) -> Fetched:
        """GET url, following redirects, within `timeout` seconds in all. `origin` is the
        source's configured URL: when it is public, no hop may go to a private address."""
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        deadline = time.monotonic() + timeout
        public = not self.private(origin or url)
        seen = [url]
        moved_to: str | None = None
        permanent_so_far = True
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if public and self.private(current):
                raise FetchError(
                    f"refused: {current} is on a private or loopback address, "
                    f"and the source {origin or url} is public"
                )
            if time.monotonic() >= deadline:
                raise FetchError(f"timed out after {timeout:g} s")
            status, location, fetched = self._one(current, headers, timeout, deadline, max_bytes)
            if location is None:
                assert fetched is not None
                fetched.moved_to = moved_to
                return fetched
            target = urljoin(current, location)
            if target in seen:
                raise FetchError(f"redirect loop: {current} redirects back to {target}")
            seen.append(target)
            permanent_so_far = permanent_so_far and status in _PERMANENT
            if permanent_so_far:
                moved_to = target
            current = target
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (last to {current})")

    def _one(
        self, url: str, headers: dict[str, str], timeout: float, deadline: float, max_bytes: int
    ) -> tuple[int, str | None, Fetched | None]:
        """One request: (status, redirect location, or the response read in full)."""
        left = max(deadline - time.monotonic(), 0.001)
        _deadline.at = deadline
        try:
            with self.client.stream("GET", url, headers=headers, timeout=left) as response:
                status = response.status_code
                if status in _REDIRECT:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError(f"HTTP {status} redirect without a Location header")
                    return status, location.strip(), None
                if status >= 400:
                    raise FetchError(f"HTTP {status} {response.reason_phrase}".strip())
                if status not in (200, 203, 304):
                    raise FetchError(f"unexpected HTTP {status} {response.reason_phrase}".strip())
                content = b"" if status == 304 else _read(response, max_bytes, deadline, timeout)
                return (
                    status,
                    None,
                    Fetched(
                        status=status,
                        url=str(response.url),
                        content=content,
                        content_type=response.headers.get("Content-Type", ""),
                        etag=response.headers.get("ETag"),
                        last_modified=response.headers.get("Last-Modified"),
                        moved_to=None,
                    ),
                )
        except FetchError:
            raise
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise FetchError(_connect_problem(url, exc)) from None
        except httpx.DecodingError:
            raise FetchError("the response's compression (Content-Encoding) is corrupt") from None
        except httpx.InvalidURL as exc:
            raise FetchError(f"invalid URL {url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        finally:
            _deadline.at = None


class _Inflater:
    """Content-Encoding undone with a cap on the output: decompress(data, max_length)
    never makes more than the cap allows, however well the data compresses."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as the RFC says
        else:
            raise FetchError(f"unsupported Content-Encoding: {encoding}")
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        """Inflated bytes, at most room + 1 of them (one past the cap says: too large)."""
        if self.encoding == "deflate" and not self._started and data:
            self._started = True
            if data[0] & 0x0F != 8:  # raw deflate, as some servers send it
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        out: list[bytes] = []
        size = 0
        try:
            while data and size <= room:
                piece = self._inflater.decompress(data, room - size + 1)
                out.append(piece)
                size += len(piece)
                data = self._inflater.unconsumed_tail
        except zlib.error:
            raise FetchError("the response's compression (Content-Encoding) is corrupt") from None
        return b"".join(out)


def _read(response: httpx.Response, max_bytes: int, deadline: float, timeout: float) -> bytes:
    declared = response.headers.get("Content-Length")
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    encoding = "" if encoding == "identity" else encoding
    # Content-Length counts the compressed bytes; a gzipped body may still grow past the cap.
    if declared and declared.isdigit() and not encoding and int(declared) > max_bytes:
        raise FetchError(too_large(max_bytes, int(declared)))
    inflater = _Inflater(encoding) if encoding else None
    chunks: list[bytes] = []
    size = 0
    for raw in response.iter_raw():  # as sent; inflated here, with the cap
        chunk = inflater.feed(raw, max_bytes - size) if inflater else raw
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(too_large(max_bytes))
        if time.monotonic() > deadline:
            # A server dribbling a byte a second never trips the read timeout.
            raise FetchError(f"timed out after {timeout:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(cap: int, size: int | None = None) -> str:
    what = f"{size:,} bytes" if size is not None else f"more than {cap:,} bytes"
    return f"too large: {what} (max_bytes is {cap:,})"


def ungzip(data: bytes, max_bytes: int) -> bytes:
    """A .gz file served as it is (sitemap.xml.gz), inflated with the same cap."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(f"corrupt gzip file: {exc}") from None
    if len(out) > max_bytes:
        raise FetchError(too_large(max_bytes))
    return out


def _connect_problem(url: str, exc: httpx.ConnectError) -> str:
    parts = urlsplit(url)
    host = parts.hostname or url
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if (
        isinstance(cause, socket.gaierror)
        or "Name or service not known" in text
        or ("nodename nor servname" in text or "name resolution" in text.lower())
    ):
        return f"DNS: cannot resolve host {host}"
    if "refused" in text.lower():
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"cannot connect to {host}:{port}: connection refused"
    if "certificate" in text.lower() or "ssl" in text.lower():
        return f"TLS problem with {host}: {text.splitlines()[0] if text else 'handshake failed'}"
    return f"cannot connect to {host}: {text.splitlines()[0] if text else type(exc).__name__}"


__all__ = ["FetchError", "Fetched", "Fetcher", "is_private", "too_large", "ungzip", "user_agent"]
