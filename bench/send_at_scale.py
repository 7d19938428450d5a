"""The SendGrid send at scale, run by hand with `make bench`; it prints its figures.

Sends one issue to 10,000, 100,000 and 1,000,000 subscribers through the sendgrid
transport to the loopback stand-in (tests/sendgrid_standin.py, its own process), on
SQLite. Each size runs in a fresh process so its peak RSS is its own. The floor is the
same run with the HTTP POST replaced by only encoding each request body: what the
ledger, the tokens and the JSON cost without any network.

    python bench/send_at_scale.py                    # all sizes
    python bench/send_at_scale.py --sizes 10000      # one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.sendgrid_standin

from sqlalchemy import insert  # noqa: E402

from syndicate import config as configuration  # noqa: E402
from syndicate import pipeline, sources  # noqa: E402
from syndicate.delivery.sendgrid import SendGridTransport  # noqa: E402
from syndicate.store import Store, Subscriber, Subscription  # noqa: E402

CONFIG = """\
site: {{title: Bench, url: https://bench.example.com/, author: {{name: Bench}}}}
database: {{url: "sqlite:///var/bench.db"}}
sources: [{{name: reviews, type: files, path: reviews}}]
digests: [{{name: weekly, title: The Week in Film, first_issue_since: 2000-01-01}}]
delivery:
  transport: sendgrid
  from: {{name: Bench, email: news@bench.example.com}}
  unsubscribe_mailto: unsubscribe@bench.example.com
  sendgrid: {{base_url: "{url}", concurrency: {concurrency}}}
"""


class RssSampler(threading.Thread):
    """The largest resident set seen while the send runs (ru_maxrss would include set-up)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True

    @staticmethod
    def current() -> int:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * resource.getpagesize()

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, self.current())


class EncodeOnly(SendGridTransport):
    """The floor: everything a real send does except the HTTP request."""

    def post(self, body: dict[str, Any]) -> str:
        json.dumps(body).encode("utf-8")
        return "floor"


def add_subscribers(store: Store, count: int) -> None:
    now = datetime.now(UTC)
    chunk = 20_000
    with store.session() as session:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            session.execute(
                insert(Subscriber),
                [
                    {
                        "id": i + 1,
                        "email": f"reader{i}@example.org",
                        "name": f"Reader {i}",
                        "status": Subscriber.ACTIVE,
                        "status_reason": "",
                        "created_at": now,
                        "status_changed_at": now,
                    }
                    for i in range(start, stop)
                ],
            )
            session.execute(
                insert(Subscription),
                [
                    {"subscriber_id": i + 1, "digest": "weekly", "created_at": now}
                    for i in range(start, stop)
                ],
            )


def one_run(count: int, floor: bool, url: str, concurrency: int) -> dict[str, Any]:
    """Runs in its own process: set up a site, send the issue, report."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "config").mkdir()
        (root / "var").mkdir()
        (root / "config" / "syndicate.yaml").write_text(
            CONFIG.format(url=url, concurrency=concurrency)
        )
        reviews = root / "reviews"
        reviews.mkdir()
        for path in sorted((ROOT / "examples" / "site" / "reviews").glob("*.md")):
            (reviews / path.name).write_bytes(path.read_bytes())
        config = configuration.load(root / "config" / "syndicate.yaml")
        with Store(config.database_url) as store:
            sources.gather(config, store)
            add_subscribers(store, count)
            transport = (EncodeOnly if floor else SendGridTransport)(config)
            sampler = RssSampler()
            sampler.start()
            start = time.perf_counter()
            outcome = pipeline.send_digest(config, store, "weekly", transport)
            elapsed = time.perf_counter() - start
            peak = sampler.stop()
        assert outcome.report is not None and outcome.report.sent == count, outcome.summary()
        return {
            "subscribers": count,
            "mode": "floor (encode only)" if floor else "sendgrid to stand-in",
            "seconds": round(elapsed, 2),
            "per_second": round(count / elapsed),
            "peak_rss_mb": round(peak / 2**20),
            # The whole process, set-up included (kilobytes on Linux).
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    options = parser.parse_args()
    os.environ.setdefault("SENDGRID_API_KEY", "SG.bench")
    os.environ.setdefault("SYNDICATE_SECRET", "bench-secret")
    if options.one:
        result = one_run(options.one, options.floor, options.url, options.concurrency)
        print(json.dumps(result))
        return

    from tests.sendgrid_standin import StandIn

    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    print(
        f"{'subscribers':>12}  {'mode':<22} {'seconds':>8} {'per second':>11} "
        f"{'peak RSS, send':>15} {'max RSS, process':>17}"
    )
    with tempfile.TemporaryDirectory() as folder:
        standin = StandIn(Path(folder))
        try:
            for size in options.sizes:
                for floor in (False, True):
                    standin.reset()
                    command = [sys.executable, __file__, "--one", str(size), "--url", standin.url]
                    command += ["--concurrency", str(options.concurrency)]
                    if floor:
                        command.append("--floor")
                    output = subprocess.run(command, check=True, capture_output=True, text=True)
                    result = json.loads(output.stdout.strip().splitlines()[-1])
                    if not floor:
                        stats = standin.stats()
                        assert stats["distinct_recipients"] == size, stats
                        assert stats["duplicates"] == 0, stats
                    print(
                        f"{size:>12,}  {result['mode']:<22} {result['seconds']:>8.2f} "
                        f"{result['per_second']:>11,} {result['peak_rss_mb']:>12} MB "
                        f"{result['max_rss_mb']:>14} MB",
                        flush=True,
                    )
        finally:
            standin.stop()


if __name__ == "__main__":
    main()
