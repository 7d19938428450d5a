"""Feeds at scale, run by hand (`make bench`): every feed and archive for 100,000 reviews.

Generates N reviews straight into SQLite (gathering files is measured by bench/run.py),
then, each in a fresh process so that its peak memory is its own:

1. a full build of every feed and archive page (site, per tag, per author, featured;
   RSS, Atom and JSON Feed) into an empty folder;
2. a rebuild with nothing changed;
3. an incremental build after one new review.

Prints wall-clock time, CPU time, files written and peak RSS for each. Targets: the full
build under 60 s, the incremental build under 2 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from syndicate import config as configuration
from syndicate.sources.content import markdown_to_html, sanitise
from syndicate.store import Review, ReviewTag, Store

CONFIG = """\
site: {{title: Bench, url: https://bench.example.com/, author: {{name: Bench}}}}
database: {{url: "sqlite:///var/bench.db"}}
sources: [{{name: reviews, type: files, path: reviews}}]
feeds:
  output: public
  items: {items}
  archive: {{page_size: {page_size}}}
  extra:
    - {{name: critics, kind: author, folder: "critics/{{slug}}/"}}
    - {{name: picks, kind: featured, folder: "picks/"}}
delivery: {{transport: outbox, from: {{name: Bench, email: b@bench.example.com}}}}
"""

TAGS = ["drama", "comedy", "horror", "sci-fi", "documentary", "animation", "thriller", "romance"]
BODY = (
    "A film about *memory*, told in long takes. [Our earlier review](/reviews/x/).\n\n"
    "## The performances\n\n" + "The cast is uniformly strong, and the score is restrained. " * 12
)
SPACING = timedelta(minutes=17)
CHUNK = 5_000


def review_row(i: int, published: datetime, html: str) -> dict[str, object]:
    return {
        "id": f"review-{i:06d}",
        "source": "reviews",
        "source_key": f"review-{i:06d}.md",
        "fingerprint": f"{i:064x}",
        "slug": f"review-{i:06d}",
        "url": f"https://bench.example.com/reviews/review-{i:06d}/",
        "title": f"Review number {i}",
        "film": f"Film {i % 500}",
        "year": 1950 + i % 70,
        "director": f"Director {i % 300}",
        "rating": (i % 11) / 2,
        "author": f"Critic {i % 7}",
        "summary": f"Review {i}: a film about memory, told in long takes.",
        "body_html": f"<p>Review {i}.</p>\n{html}",
        "image": f"https://bench.example.com/images/{i}.jpg",
        "featured": i % 20 == 0,
        "related": [],
        "published": published,
        "updated": published,
        "first_seen": published,
    }


def tag_rows(i: int) -> list[dict[str, object]]:
    first, second = TAGS[i % len(TAGS)], TAGS[(i * 3 + 1) % len(TAGS)]
    tags = [first] if first == second else [first, second]
    return [{"review_id": f"review-{i:06d}", "tag": t, "position": n} for n, t in enumerate(tags)]


def seed(config_path: Path, count: int) -> None:
    config = configuration.load(config_path)
    html = sanitise(markdown_to_html(BODY), "https://bench.example.com/reviews/x/")
    newest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    with Store(config.database_url) as store:
        for start in range(0, count, CHUNK):
            numbers = range(start, min(start + CHUNK, count))
            with store.session() as session:
                session.execute(
                    insert(Review),
                    [review_row(i, newest - SPACING * (count - 1 - i), html) for i in numbers],
                )
                session.execute(insert(ReviewTag), [row for i in numbers for row in tag_rows(i)])


def add_one(config_path: Path, number: int) -> None:
    config = configuration.load(config_path)
    html = sanitise(markdown_to_html(BODY), "https://bench.example.com/reviews/x/")
    now = datetime.now(UTC) - timedelta(minutes=1)
    with Store(config.database_url) as store, store.session() as session:
        session.execute(insert(Review), [review_row(number, now, html)])
        session.execute(insert(ReviewTag), tag_rows(number))


def build(config_path: str) -> dict[str, float]:
    """One build, in its own process: its figures and its own peak RSS."""
    from syndicate import feeds

    config = configuration.load(config_path)
    with Store(config.database_url) as store:
        start, cpu = time.perf_counter(), time.process_time()
        report = feeds.build_feeds(config, store)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "wall": wall,
        "cpu": cpu,
        "written": len(report.written),
        "unchanged": len(report.unchanged),
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_fresh_process(config_path: Path) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(build, str(config_path)).result()


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50, help="feeds.items")
    parser.add_argument("--page-size", type=int, default=50, help="feeds.archive.page_size")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_path = root / "syndicate.yaml"
        config_path.write_text(CONFIG.format(items=args.items, page_size=args.page_size))
        start = time.perf_counter()
        seed(config_path, args.reviews)
        print(f"{args.reviews:,} reviews stored in {time.perf_counter() - start:.1f} s", flush=True)

        stages = [
            ("full build, every feed and archive page", None),
            ("rebuild, nothing changed", None),
            ("incremental build after one new review", args.reviews),
        ]
        for label, new in stages:
            if new is not None:
                add_one(config_path, new)
            figures = in_fresh_process(config_path)
            row = (
                label,
                f"{figures['wall']:.2f} s",
                f"{figures['cpu']:.2f} s",
                f"{figures['written']:,.0f} written, {figures['unchanged']:,.0f} unchanged",
                f"{figures['rss']:.0f} MB",
            )
            rows.append(row)
            print(
                f"{label:<42} {row[1]:>9}  CPU {row[2]:>9}  {row[3]:<34} peak RSS {row[4]}",
                flush=True,
            )
        count, size = folder_size(root / "public")
        print(f"output: {count:,} files, {size / 2**20:,.0f} MB")
    print("\n| Stage | Wall clock | CPU | Files | Peak RSS |\n| --- | ---: | ---: | --- | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
