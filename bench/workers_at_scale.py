"""Celery workers at scale, run by hand with `make bench`; it prints its figures.

One issue of the weekly digest to 1,000,000 subscribers on PostgreSQL, sent by 1, 2 and 4
`syndicate worker` processes (Celery, threads pool, a Redis broker) to the SendGrid
stand-in (tests/sendgrid_standin.py, its own process), everything on this machine:

- a throwaway PostgreSQL cluster (tests/pgcluster.py) and Redis (tests/redisserver.py);
- the site set up as bench/send_at_scale.py does, on PostgreSQL, with workers.broker_url;
- the subscribers and their subscriptions loaded with COPY;
- for each setup: the issue tables emptied (TRUNCATE), so every setup sends the same issue
  1 from the same state; N workers started and ready; then `syndicate digest send weekly`
  (it plans the batches, queues one task per batch and waits), timed from its start to
  its exit. Setup 0 is the same send without Celery: the in-process threads, on
  PostgreSQL, for comparison with the SQLite figures of send_at_scale.py.

Every syndicate process (workers and sender) runs through a small shim (`--shim`) that
wraps a few functions with timers before handing over to the `syndicate` command: per
batch, `take` (claim + SENDING; the two signed tokens per subscriber inside it timed
apart), building the request body, JSON encoding, the HTTP round trip, `complete`, and
the task as a whole; wall time and the thread's CPU time of each. The stand-in's own
time per request comes from its call log. CPU seconds of every process (workers,
sender, PostgreSQL's backends, Redis, the stand-in) come from /proc.

    python bench/workers_at_scale.py                                  # 1,000,000
    python bench/workers_at_scale.py --subscribers 50000 --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pgcluster, tests.redisserver, tests.sendgrid_standin

CONFIG = """\
site: {{title: Bench, url: https://bench.example.com/, author: {{name: Bench}}}}
database: {{url: "{database}"}}
sources: [{{name: reviews, type: files, path: reviews}}]
digests: [{{name: weekly, title: The Week in Film, first_issue_since: 2000-01-01}}]
delivery:
  transport: sendgrid
  from: {{name: Bench, email: news@bench.example.com}}
  unsubscribe_mailto: unsubscribe@bench.example.com
  sendgrid: {{base_url: "{url}", concurrency: {concurrency}}}
"""
WORKERS = 'workers: {{broker_url: "{broker}"}}\n'
TIMINGS_ENV = "SYNDICATE_BENCH_TIMINGS"
ISSUE_TABLES = "delivery_batches, deliveries, delivery_events, issue_reviews, digest_issues"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the shim: timers around a syndicate process ------------------------------------------


def shim(arguments: list[str]) -> None:
    """Run `syndicate ARGUMENTS` in this process with timers on the per-batch steps.

    Each timed call appends one JSON line to $SYNDICATE_BENCH_TIMINGS: kind, start (epoch),
    wall and thread-CPU seconds. The timers cost a few microseconds a batch, and a
    fraction of a microsecond per subscriber for the token timer."""
    import python_http_client.client as http_client

    from syndicate import cli, workers
    from syndicate.delivery import batches, sendgrid
    from syndicate.delivery import sender as sender_module

    out = Path(os.environ[TIMINGS_ENV]).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115
    lock = threading.Lock()
    local = threading.local()
    pid = os.getpid()

    def emit(kind: str, start: float, wall: float, cpu: float, **extra: Any) -> None:
        line = json.dumps({"k": kind, "at": start, "wall": wall, "cpu": cpu, "pid": pid, **extra})
        with lock:
            out.write(line + "\n")

    def timed(kind: str, function: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            at, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                emit(kind, at, time.perf_counter() - wall, time.thread_time() - cpu, **fixed)

        return wrapper

    # Tokens: many calls per batch, summed per thread and reported with the take.
    recipient_for = batches.recipient_for

    def counted_recipient_for(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return recipient_for(*args, **kwargs)
        finally:
            local.tokens = getattr(local, "tokens", 0.0) + time.thread_time() - start

    batches.recipient_for = counted_recipient_for
    take = batches.Batches.take

    def timed_take(self: Any, batch_id: int, report: Any) -> Any:
        local.tokens = 0.0
        at, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
        taken = take(self, batch_id, report)
        emit(
            "take",
            at,
            time.perf_counter() - wall,
            time.thread_time() - cpu,
            tokens=local.tokens,
            n=len(taken.recipients) if taken else 0,
        )
        return taken

    batches.Batches.take = timed_take  # type: ignore[method-assign]

    def wrap(owner: Any, name: str, kind: str) -> None:
        # Steps another version of syndicate does not have are left out of the figures.
        if hasattr(owner, name):
            setattr(owner, name, timed(kind, getattr(owner, name)))

    wrap(batches, "record_sending", "record_sending")
    for name in ("complete", "finish_issue", "plan", "recover"):
        wrap(batches.Batches, name, name)
    wrap(sendgrid.SendGridTransport, "request_body", "body")
    wrap(sendgrid.SendGridTransport, "post", "post")
    wrap(http_client.Client, "_make_request", "http")
    http_client.json = argparse.Namespace(
        dumps=timed("encode", json.dumps), loads=json.loads, JSONDecodeError=json.JSONDecodeError
    )
    # The waiting sender counts the issue's recorded rows every poll, for its progress.
    wrap(sender_module, "_recorded", "progress_count")  # as of commit 8814631
    wrap(workers, "_recorded", "progress_count")  # since issue 8
    wrap(workers, "_take_and_send", "task")
    wrap(workers, "wait_for_batches", "wait")
    wrap(workers.CeleryFanOut, "send", "fan_out")
    # How long the process took to get here (interpreter and imports), for the sender.
    emit("startup", time.time(), 0.0, time.process_time())
    sys.argv = ["syndicate", *arguments]
    cli.main()


# --- CPU seconds from /proc ---------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of a process; with `reaped`, plus its waited-for children's."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (busy, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def tree_cpu_seconds(parent: int) -> float:
    """A postmaster and its children, live or exited (their time is in its cutime)."""
    total = cpu_seconds(parent, reaped=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat(int(entry.name))[1]) == parent:
                    total += cpu_seconds(int(entry.name), reaped=True)
    return total


# --- set-up -------------------------------------------------------------------------------


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def add_subscribers(url: str, count: int) -> float:
    """COPY `count` active subscribers of the weekly digest; seconds taken."""
    start = time.perf_counter()
    created = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None)
    with psycopg_connect(url) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY subscribers (id, email, name, status, status_reason, created_at, "
            "status_changed_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                copy.write_row(
                    (i + 1, f"reader{i}@example.org", f"Reader {i}", "active", "", created, created)
                )
        with cursor.copy(
            "COPY subscriptions (subscriber_id, digest, created_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                copy.write_row((i + 1, "weekly", created))
        cursor.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), %s)", (count,))
        cursor.execute("VACUUM ANALYZE subscribers")
        cursor.execute("VACUUM ANALYZE subscriptions")
    return time.perf_counter() - start


def analyze_deliveries_often(url: str) -> None:
    """Have autovacuum analyze the ledger every 20,000 changed rows, within a second.

    With PostgreSQL's defaults (10% of the table, a minute apart) a send runs on
    statistics that do not know its issue: the first send into an empty ledger, and every
    new issue once the table is large. The planner then thinks the issue has no ledger
    rows and checks each subscriber of a batch against all of them (docs/deployment.md,
    "Scaling out"), which would make the first setup here pay for it alone."""
    with psycopg_connect(url) as conn:
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(
            "ALTER TABLE deliveries SET (autovacuum_analyze_scale_factor = 0, "
            "autovacuum_analyze_threshold = 20000)"
        )


def reset_issues(url: str) -> None:
    """Every setup sends issue 1 of the same reviews to the same subscribers, from empty
    issue tables (TRUNCATE: no dead rows left behind for the next setup to skip)."""
    with psycopg_connect(url) as conn:
        conn.execute(f"TRUNCATE {ISSUE_TABLES} RESTART IDENTITY CASCADE")
        conn.execute("ANALYZE")


def postmaster_pid(url: str) -> int:
    with psycopg_connect(url) as conn:  # read while the backend is alive
        return int(_stat(conn.execute("SELECT pg_backend_pid()").fetchone()[0])[1])


def ledger_counts(url: str) -> dict[str, int]:
    with psycopg_connect(url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY 1").fetchall())


class Worker:
    """`syndicate worker` (through the shim) as its own process, its log in a file."""

    def __init__(self, site: Path, name: str, concurrency: int, env: dict[str, str]) -> None:
        self.log = site / f"{name}.log"
        command = [sys.executable, __file__, "--shim", "--config", "config/workers.yaml"]
        command += ["worker", "-c", str(concurrency)]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=site, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while " ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {name} did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- one setup ----------------------------------------------------------------------------


def one_setup(
    n: int,
    count: int,
    concurrency: int,
    site: Path,
    database: str,
    redis_url: str,
    standin: Any,
) -> dict[str, Any]:
    import redis

    reset_issues(database)
    standin.reset()
    timings = site / f"timings-{n}.jsonl"
    timings.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, TIMINGS_ENV: str(timings), "PYTHONPATH": path}
    workers = [Worker(site, f"worker-{n}-{i}", concurrency, env) for i in range(n)]
    broker = redis.Redis.from_url(redis_url)
    try:
        postmaster = postmaster_pid(database)
        redis_pid = int(broker.info("server")["process_id"])
        machine_before = machine_cpu_seconds()
        cpu_before = {
            "workers": sum(cpu_seconds(w.process.pid) for w in workers),
            "postgres": tree_cpu_seconds(postmaster),
            "redis": cpu_seconds(redis_pid),
            "stand-in": cpu_seconds(standin.process.pid),
        }
        config = "config/workers.yaml" if n else "config/inprocess.yaml"
        command = [sys.executable, __file__, "--shim", "--config", config]
        command += ["digest", "send", "weekly"]
        with (site / f"sender-{n}.log").open("w") as out:
            start, started = time.perf_counter(), time.time()
            sender = subprocess.Popen(command, cwd=site, env=env, stdout=out, stderr=out)
            _, status, usage = os.wait4(sender.pid, 0)
            wall = time.perf_counter() - start
        sender.returncode = os.waitstatus_to_exitcode(status)
        machine = machine_cpu_seconds() - machine_before
        cpu_after = {
            "workers": sum(cpu_seconds(w.process.pid) for w in workers),
            "postgres": tree_cpu_seconds(postmaster),
            "redis": cpu_seconds(redis_pid),
            "stand-in": cpu_seconds(standin.process.pid),
        }
    finally:
        for worker in workers:
            worker.stop()
        broker.close()
    output = (site / f"sender-{n}.log").read_text()
    assert sender.returncode == 0 and "(complete)" in output, output[-3000:]
    stats = standin.stats()
    assert stats["distinct_recipients"] == count and stats["duplicates"] == 0, stats
    assert ledger_counts(database) == {"sent": count}, ledger_counts(database)
    cpu = {kind: cpu_after[kind] - cpu_before[kind] for kind in cpu_before}
    cpu["sender"] = usage.ru_utime + usage.ru_stime
    # Whatever else ran on the machine meanwhile (other people's work, the bench itself).
    cpu["other"] = max(0.0, machine - sum(cpu.values()))
    calls = standin.calls()
    return {
        "setup": n,
        "wall": wall,
        "started": started,
        "sender_pid": sender.pid,
        "cpu": cpu,
        "events": [json.loads(line) for line in timings.read_text().splitlines()],
        "standin": [c["answered"] - c["arrived"] for c in calls if c["answer"] == "202"],
        "requests": len(calls),
    }


# --- the figures --------------------------------------------------------------------------


def summarise(result: dict[str, Any], count: int) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in result["events"]:
        by_kind[event["k"]].append(event)
    takes = [e for e in by_kind["take"] if e["n"]]
    batches = len(takes)
    first = min(e["at"] for e in takes)
    last = max(e["at"] + e["wall"] for e in by_kind["complete"])

    def mean_ms(kind: str, field: str = "wall") -> float:
        values = [e[field] for e in (takes if kind == "take" else by_kind[kind])]
        return 1000 * statistics.fmean(values) if values else 0.0

    per_batch = {
        "take": (mean_ms("take"), mean_ms("take", "cpu")),
        "  of which tokens": (None, mean_ms("take", "tokens")),
        "  of which record SENDING": (mean_ms("record_sending"), mean_ms("record_sending", "cpu")),
        "build the request body": (mean_ms("body"), mean_ms("body", "cpu")),
        "encode the JSON": (mean_ms("encode"), mean_ms("encode", "cpu")),
        "HTTP round trip": (mean_ms("http"), mean_ms("http", "cpu")),
        "  stand-in, body read to answer": (1000 * statistics.fmean(result["standin"]), None),
        "complete (SENT + batch done)": (mean_ms("complete"), mean_ms("complete", "cpu")),
        "finish_issue (per task)": (mean_ms("finish_issue"), mean_ms("finish_issue", "cpu")),
        "task, start to end": (mean_ms("task"), mean_ms("task", "cpu")),
    }
    if not result["setup"]:
        del per_batch["task, start to end"]
    plan = by_kind["plan"][0]
    sender = next(e for e in by_kind["startup"] if e["pid"] == result["sender_pid"])
    fan_out = by_kind["fan_out"][0]["wall"] if by_kind["fan_out"] else 0.0
    wait = by_kind["wait"][0]["wall"] if by_kind["wait"] else 0.0
    counts = by_kind["progress_count"]
    return {
        "setup": result["setup"],
        "progress_counts": (len(counts), sum(e["wall"] for e in counts)),
        "wall": result["wall"],
        "span": last - first,
        "per_second": count / result["wall"],
        "batches": batches,
        "plan": plan["wall"],
        "startup": sender["at"] - result["started"],
        "startup_cpu": sender["cpu"],
        "enqueue": fan_out - wait,
        "cpu": result["cpu"],
        "per_batch": per_batch,
    }


def setup_name(n: int, concurrency: int) -> str:
    if not n:
        return f"in-process, {concurrency} threads"
    return f"{n} worker{'s' if n > 1 else ''} x {concurrency} threads"


def print_tables(summaries: list[dict[str, Any]], concurrency: int) -> None:
    names = [setup_name(s["setup"], concurrency) for s in summaries]
    print()
    print(
        f"{'setup':<24} {'wall':>8} {'per second':>11} {'first take':>12} {'sender':>8} "
        f"{'plan':>7} {'enqueue':>8} {'batches':>8}"
    )
    print(f"{'':<24} {'':>8} {'':>11} {'to last done':>12} {'start-up':>8}")
    for name, s in zip(names, summaries, strict=True):
        print(
            f"{name:<24} {s['wall']:>7.2f}s {s['per_second']:>11,.0f} {s['span']:>11.2f}s "
            f"{s['startup']:>7.2f}s {s['plan']:>6.2f}s {s['enqueue']:>7.2f}s {s['batches']:>8,}"
        )
    print()
    kinds = ["workers", "sender", "postgres", "redis", "stand-in", "other"]
    print("CPU seconds during the send, per process; busy: total / (cores x wall)")
    print("(other: anything else that ran on the machine meanwhile)")
    print(f"{'setup':<24} " + " ".join(f"{k:>9}" for k in kinds) + f" {'total':>9} {'busy':>6}")
    cores = os.cpu_count() or 1
    for name, s in zip(names, summaries, strict=True):
        total = sum(s["cpu"].values())
        print(
            f"{name:<24} "
            + " ".join(f"{s['cpu'][k]:>9.1f}" for k in kinds)
            + f" {total:>9.1f} {total / (cores * s['wall']):>6.0%}"
        )
    print(
        "(sender, waiting for the workers: progress counts of the ledger, "
        + ", ".join(f"{n} taking {t:.1f} s" for n, t in (s["progress_counts"] for s in summaries))
        + ")"
    )
    print(
        "(sender: the whole process, start-up included: "
        + ", ".join(f"{s['startup_cpu']:.1f} s" for s in summaries)
        + " before the command ran)"
    )
    print()
    print("Per batch of 1,000, mean milliseconds: wall / CPU of the thread")
    print(f"{'step':<34}" + "".join(f" {name:>24}" for name in names))
    steps: dict[str, None] = {}
    for s in summaries:
        steps.update(dict.fromkeys(s["per_batch"]))
    for step in steps:
        cells = []
        for s in summaries:
            wall, cpu = s["per_batch"].get(step, (None, None))
            text = ("-" if wall is None else f"{wall:.1f}") + " / "
            text += "-" if cpu is None else f"{cpu:.1f}"
            cells.append(f" {text:>24}")
        print(f"{step:<34}" + "".join(cells))
    print()
    print("CPU milliseconds per batch, per process (CPU seconds above / batches)")
    own = kinds[:-1]
    print(f"{'setup':<24} " + " ".join(f"{k:>9}" for k in own) + f" {'total':>9}")
    for name, s in zip(names, summaries, strict=True):
        per = {k: 1000 * s["cpu"][k] / s["batches"] for k in own}
        print(
            f"{name:<24} "
            + " ".join(f"{per[k]:>9.1f}" for k in own)
            + f" {sum(per.values()):>9.1f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--shim":
        shim(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument(
        "--workers",
        default="0,1,2,4",
        help="setups to run, comma-separated worker counts; 0 is the in-process send",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="threads per worker (and in-process)"
    )
    parser.add_argument("--keep", type=Path, help="copy the logs and timings here")
    options = parser.parse_args()
    setups = [int(n) for n in options.workers.split(",")]
    os.environ.setdefault("SENDGRID_API_KEY", "SG.bench")
    os.environ.setdefault("SYNDICATE_SECRET", "bench-secret")

    from tests.pgcluster import create_database, throwaway_cluster
    from tests.redisserver import throwaway_redis
    from tests.sendgrid_standin import StandIn

    from syndicate import config as configuration
    from syndicate import sources
    from syndicate.store import Store

    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}; "
        f"{options.subscribers:,} subscribers; setups {setups} (0: in-process)",
        flush=True,
    )
    summaries = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        admin = stack.enter_context(throwaway_cluster())
        redis_url = stack.enter_context(throwaway_redis())
        standin = StandIn(folder)
        stack.callback(standin.stop)
        database = create_database(admin, "bench")
        site = folder / "site"
        (site / "config").mkdir(parents=True)
        (site / "reviews").mkdir()
        for path in sorted((ROOT / "examples" / "site" / "reviews").glob("*.md")):
            (site / "reviews" / path.name).write_bytes(path.read_bytes())
        base = CONFIG.format(database=database, url=standin.url, concurrency=options.concurrency)
        (site / "config" / "inprocess.yaml").write_text(base)
        (site / "config" / "workers.yaml").write_text(base + WORKERS.format(broker=redis_url))
        config = configuration.load(site / "config" / "inprocess.yaml")
        with contextlib.chdir(site), Store(config.database_url) as store:
            sources.gather(config, store)
        took = add_subscribers(database, options.subscribers)
        analyze_deliveries_often(database)
        print(f"{options.subscribers:,} subscribers loaded with COPY in {took:.1f} s", flush=True)
        try:
            for n in setups:
                result = one_setup(
                    n, options.subscribers, options.concurrency, site, database, redis_url, standin
                )
                summary = summarise(result, options.subscribers)
                summaries.append(summary)
                print(
                    f"  {setup_name(n, options.concurrency)}: {summary['wall']:.2f} s, "
                    f"{summary['per_second']:,.0f} subscribers/s",
                    flush=True,
                )
        finally:
            if options.keep:
                options.keep.mkdir(parents=True, exist_ok=True)
                for path in site.glob("*.*"):
                    shutil.copy(path, options.keep / path.name)
    print_tables(summaries, options.concurrency)


if __name__ == "__main__":
    main()
