"""WebSub publish pings: telling each hub which feeds just changed.

The pings run after the feed files are written, as a last step of the build with a short
total budget (feeds.websub.timeout), rather than in a background thread: `syndicate feeds`
and `syndicate run --once` are short-lived processes, and a daemon thread would be killed
with them before a slow hub answered, while a non-daemon one would hold the exit anyway.
Hubs are pinged concurrently, each failure is retried with capped exponential backoff
(tenacity), and whatever is still failing when the budget is spent is logged and given
up: the hub also polls, and the next build pings again. A ping never fails the build.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from syndicate import __version__
from syndicate.config import WebSubConfig

log = logging.getLogger(__name__)


class TemporaryHubError(Exception):
    """Worth retrying: a 5xx or 429 answer, a timeout, a refused connection."""


class HubRefused(Exception):
    """Not worth retrying: the hub said the request is wrong (4xx)."""


@dataclass
class PingReport:
    notified: list[tuple[str, str]] = field(default_factory=list)  # (hub, feed URL)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (hub, feed URL, why)

    def summary(self) -> str:
        hubs = len({hub for hub, _ in self.notified})
        text = f"{len(self.notified)} WebSub ping(s) to {hubs} hub(s)"
        return text + (f", {len(self.failed)} failed" if self.failed else "")


def publish(settings: WebSubConfig, feed_urls: list[str]) -> PingReport:
    """POST hub.mode=publish&hub.url=<feed> to every hub, within settings.timeout seconds."""
    report = PingReport()
    jobs = [(hub, url) for hub in settings.hubs for url in feed_urls]
    if not jobs:
        return report
    deadline = time.monotonic() + settings.timeout
    lock = threading.Lock()

    def ping(job: tuple[str, str]) -> None:
        hub, url = job
        try:
            _ping_with_retries(settings, hub, url, deadline)
        except Exception as exc:  # logged, never raised: the feeds are written already
            reason = _reason(exc)
            log.warning("WebSub: %s was not told about %s: %s", hub, url, reason)
            with lock:
                report.failed.append((hub, url, reason))
        else:
            log.info("WebSub: told %s about %s", hub, url)
            with lock:
                report.notified.append((hub, url))

    pool = ThreadPoolExecutor(max_workers=min(8, len(jobs)), thread_name_prefix="websub")
    futures = [pool.submit(ping, job) for job in jobs]
    for future in futures:
        future.result()  # each ping stops itself at the deadline
    pool.shutdown(wait=True)
    return report


def _ping_with_retries(settings: WebSubConfig, hub: str, url: str, deadline: float) -> None:
    budget = max(deadline - time.monotonic(), 0.0)
    retrying = Retrying(
        stop=stop_after_attempt(settings.retries + 1) | stop_after_delay(budget),
        wait=wait_exponential(multiplier=0.2, max=settings.max_backoff) + wait_random(0, 0.1),
        retry=retry_if_exception_type(TemporaryHubError),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TemporaryHubError("out of time")
            _post(hub, url, remaining)


def _post(hub: str, url: str, timeout: float) -> None:
    """One ping. The whole exchange (connecting, the status line, headers, an error's
    first bytes) ends within `timeout`: a socket timeout alone bounds each read, not their
    sum, and a hub trickling one byte a second would hold the build for as long as it liked.
    The reply's body is not read at all when the hub says yes."""
    body = urlencode({"hub.mode": "publish", "hub.url": url}).encode()
    request = urllib.request.Request(
        hub,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": f"syndicate/{__version__}",
        },
    )
    watch = _Watch()
    opener = urllib.request.build_opener(_HTTPHandler(watch), _HTTPSHandler(watch))
    timer = threading.Timer(timeout, watch.expire)
    timer.daemon = True
    timer.start()
    try:
        with opener.open(request, timeout=min(timeout, 10)):
            pass  # the status is the answer; whatever body follows is not waited for
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(300).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            exc.close()
        message = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
        if exc.code == 429 or exc.code >= 500:
            raise TemporaryHubError(message) from None
        raise HubRefused(message) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if watch.expired:
            raise TemporaryHubError("no answer within feeds.websub.timeout") from None
        raise TemporaryHubError(str(getattr(exc, "reason", exc))) from None
    finally:
        timer.cancel()
        watch.expire()  # a connection still open (a redirect's first one) is closed now


class _Watch:
    """The sockets of one ping; at its deadline they are shut down, which ends whatever
    read is waiting on them at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.expired = False

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if not self.expired:
                return
        self._shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)  # a plain socket: TLS wraps it later


def _watched(base: type[http.client.HTTPConnection], watch: _Watch) -> type:
    """`base`, with each socket it opens handed to `watch` before any byte is read
    (before a TLS handshake, too)."""

    class Connection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection

            def create_watched(*args: Any, **kwargs: Any) -> socket.socket:
                sock = create(*args, **kwargs)
                watch.add(sock)
                return sock

            self._create_connection = create_watched

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self.watch), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _watched(http.client.HTTPSConnection, self.watch)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RetryError):
        exc = exc.last_attempt.exception() or exc
    return str(exc) or type(exc).__name__
