"""Benchmarks, run by hand with `make bench`; they print their figures.

Measures each stage of the pipeline on a generated site in a temporary folder (SQLite):
gathering N review files from scratch and again with nothing changed, building every
feed, rendering one digest issue, and delivering it to M subscribers through the outbox
transport. The issue is a realistic one: it covers the newest ISSUE_REVIEWS reviews (a
busy week), while related links are still chosen from the whole archive of N. Results for
this machine are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from syndicate import config as configuration
from syndicate import digest, feeds, pipeline, subscribers
from syndicate.delivery import OutboxTransport
from syndicate.store import Store

T = TypeVar("T")
Row = tuple[str, str, str]  # what, wall-clock time or figure, CPU time

CONFIG = """\
site: {{title: Bench, url: https://bench.example.com/, author: {{name: Bench}}}}
database: {{url: "sqlite:///var/bench.db"}}
sources: [{{name: reviews, type: files, path: reviews}}]
feeds: {{output: public, items: 20}}
digests: [{{name: weekly, title: Weekly, first_issue_since: "{since}"}}]
delivery: {{transport: outbox, from: {{name: Bench, email: b@bench.example.com}}, batch_size: 500}}
"""

# How many reviews the benchmarked issue carries: a busy week for a review site.
ISSUE_REVIEWS = 20
SPACING = timedelta(minutes=17)  # between two generated reviews' publication times

TAGS = ["drama", "comedy", "horror", "sci-fi", "documentary", "animation", "thriller", "romance"]
BODY = (
    "A film about *memory*, told in long takes. [Our earlier review](/reviews/x/).\n\n"
    "## The performances\n\n" + "The cast is uniformly strong, and the score is restrained. " * 12
)


def timed(label: str, action: Callable[[], T], rows: list[Row]) -> T:
    """Run `action`, printing its wall-clock time and the CPU time this process spent.

    Wall time well above CPU time is time spent waiting: on the disk (fsync) or, on a
    shared machine, for a core.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    result = action()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rows.append((label, f"{elapsed:.2f} s", f"{cpu:.2f} s"))
    print(f"{label:<55} {elapsed:8.2f} s   CPU {cpu:7.2f} s", flush=True)
    return result


def publication_times(count: int) -> list[datetime]:
    """Oldest first, the newest an hour ago, so every review is already published."""
    newest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    return [newest - SPACING * (count - 1 - i) for i in range(count)]


def write_reviews(folder: Path, times: list[datetime]) -> None:
    folder.mkdir(parents=True)
    for i, published in enumerate(times):
        tags = f"[{TAGS[i % len(TAGS)]}, {TAGS[(i * 3 + 1) % len(TAGS)]}]"
        (folder / f"review-{i:06d}.md").write_text(
            f"---\ntitle: Review number {i}\nfilm: Film {i % 500}\nyear: {1950 + i % 70}\n"
            f"director: Director {i % 300}\nrating: {(i % 11) / 2}\nauthor: Critic {i % 7}\n"
            f"published: {published.isoformat()}\ntags: {tags}\n---\n\n{BODY}\n",
            encoding="utf-8",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("SYNDICATE_SECRET", "bench-secret")
    rows: list[Row] = []
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = publication_times(args.reviews)
        # The first issue covers reviews published after `since`: the newest ISSUE_REVIEWS.
        cover = min(ISSUE_REVIEWS, args.reviews)
        since = times[-cover] - timedelta(seconds=30)  # never midnight: stays a datetime
        (root / "syndicate.yaml").write_text(CONFIG.format(since=since.isoformat()))
        write_reviews(root / "reviews", times)
        config = configuration.load(root / "syndicate.yaml")
        store = Store(config.database_url)
        n = args.reviews
        timed(
            f"gather {n:,} review files from scratch, related links included",
            lambda: pipeline.gather(config, store),
            rows,
        )
        timed(
            f"gather again, nothing changed ({n:,} files)",
            lambda: pipeline.gather(config, store),
            rows,
        )
        report = timed(
            "build every feed and archive page (RSS, Atom, JSON Feed)",
            lambda: feeds.build_feeds(config, store),
            rows,
        )
        print(f"  {report.summary()}")
        timed("build feeds again, nothing changed", lambda: feeds.build_feeds(config, store), rows)

        csv_file = root / "subscribers.csv"
        csv_file.write_text(
            "email,name,digests\n"
            + "".join(
                f"reader{i}@example.com,Reader {i},weekly\n" for i in range(args.subscribers)
            ),
            encoding="utf-8",
        )

        def import_readers() -> subscribers.ImportReport:
            with store.session() as session, csv_file.open(encoding="utf-8") as handle:
                return subscribers.import_csv(session, handle, "bench", ["weekly"], {"weekly"})

        imported = timed(f"import {args.subscribers:,} subscribers from CSV", import_readers, rows)
        assert imported.added == args.subscribers, imported.summary()
        with store.session() as session:
            draft = timed(
                f"render one issue ({cover} new reviews, related from {n:,})",
                lambda: digest.draft(config, session, config.digest("weekly"), datetime.now(UTC)),
                rows,
            )
            assert draft is not None and draft.selection is not None
            assert len(draft.selection.reviews) == cover, len(draft.selection.reviews)
            html_kb = len(draft.rendered.html.encode("utf-8")) / 1024
            rows.append(("issue HTML, compiled once", f"{html_kb:.1f} KB", ""))
            print(f"  issue HTML {html_kb:.1f} KB", flush=True)
        transport = OutboxTransport(root / "var" / "outbox")
        m = args.subscribers
        start = time.perf_counter()
        outcome = timed(
            f"send it to {m:,} subscribers (outbox .eml files)",
            lambda: pipeline.send_digest(config, store, "weekly", transport),
            rows,
        )
        per_second = m / (time.perf_counter() - start)
        assert outcome.report is not None and outcome.report.sent == m, outcome.summary()
        emails = list((root / "var" / "outbox").glob("*.eml"))
        eml_kb = sum(e.stat().st_size for e in emails) / len(emails) / 1024 if emails else 0.0
        rows.append(("messages per second", f"{per_second:,.0f}", ""))
        rows.append(("one .eml file, on average", f"{eml_kb:.1f} KB", ""))
        print(f"  {outcome.summary()}; {per_second:,.0f} messages/s, {eml_kb:.1f} KB per .eml")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("peak RSS of the whole run", f"{peak:.0f} MB", ""))
        print(f"peak RSS {peak:.0f} MB")
        store.close()
    print("\nAs a Markdown table (for docs/benchmarks.md):\n")
    print("| Stage | Wall clock | CPU |\n| --- | ---: | ---: |")
    for label, value, cpu in rows:
        print(f"| {label} | {value} | {cpu} |")


if __name__ == "__main__":
    main()
