"""Remote sources, run by hand (`make bench`): 50 feed sources of 100 entries each,
served by a loopback HTTP server with ETags.

1. a first gather: every feed fetched, parsed, and its 100 entries stored as reviews;
2. a re-gather with nothing changed: every feed answers 304 Not Modified.

Prints wall-clock time, requests served and peak RSS for each. Loopback hides network
latency (real feeds take 0.1-2 s each; sources are fetched 8 at a time for that reason),
so these figures are syndicate's own cost.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from syndicate import config as configuration
from syndicate import sources
from syndicate.store import Store

PARAGRAPH = (
    "<p>The film moves with the patience of a thriller that knows where it is going, "
    "and the camera <em>lingers</em> on faces where others would cut away. "
    '<a href="/reviews/related/">Another review</a> said as much.</p>'
)


def feed(number: int, entries: int) -> bytes:
    start = datetime(2026, 11, 25, 12, tzinfo=UTC)
    items = []
    for index in range(entries):
        when = format_datetime(start - timedelta(hours=index + number))
        items.append(
            f"<item><title>Review {index} of feed {number}</title>"
            f"<link>https://site{number}.example/reviews/film-{index}/</link>"
            f'<guid isPermaLink="false">site{number}-{index}</guid>'
            f"<pubDate>{when}</pubDate><category>drama</category><category>tag{index % 7}</category>"
            f"<description>Summary of review {index}.</description>"
            f"<content:encoded><![CDATA[{PARAGRAPH * 6}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>Site {number}</title><link>https://site{number}.example/</link>"
        f"<description>Bench feed</description>{''.join(items)}</channel></rss>"
    ).encode()


def serve(feeds: dict[str, bytes]) -> tuple[ThreadingHTTPServer, list[int]]:
    served = [0, 0]  # 200s, 304s

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = feeds[self.path]
            etag = f'"{hash(body)}"'
            if self.headers.get("If-None-Match") == etag:
                served[1] += 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            served[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        # The default backlog of 5 drops concurrent connects, which then retry after 1 s.
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--entries", type=int, default=100)
    args = parser.parse_args()

    feeds = {f"/feed{n}.xml": feed(n, args.entries) for n in range(args.sources)}
    server, served = serve(feeds)
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        lines = [
            "site: {title: Bench, url: https://bench.example.com/, author: {name: Bench}}",
            "database: {url: 'sqlite:///var/bench.db'}",
            "delivery: {from: {name: Bench, email: bench@example.com}}",
            "sources:",
            *(
                f"  - {{name: site{n}, type: feed, url: 'http://127.0.0.1:{port}/feed{n}.xml'}}"
                for n in range(args.sources)
            ),
        ]
        (root / "syndicate.yaml").write_text("\n".join(lines) + "\n")
        config = configuration.load(root / "syndicate.yaml")
        total = args.sources * args.entries
        size = sum(len(body) for body in feeds.values())
        print(
            f"remote sources: {args.sources} feeds x {args.entries} entries = {total} reviews, "
            f"{size / 1e6:.1f} MB of RSS, loopback"
        )
        with Store(config.database_url) as store:
            for label in ("first gather", "re-gather (all 304)"):
                before = list(served)
                started = time.perf_counter()
                report = sources.gather(config, store)
                wall = time.perf_counter() - started
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"  {label:<22} {wall:7.2f} s   {served[0] - before[0]:3d} x 200, "
                    f"{served[1] - before[1]:3d} x 304   {report.summary()}   peak RSS {rss:.0f} MB"
                )
                assert not report.errors, report.errors
    server.shutdown()


if __name__ == "__main__":
    main()
