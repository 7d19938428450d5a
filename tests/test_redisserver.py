"""The Redis fixture gives a working server, and Celery runs tasks through it.

These prove the broker and a real `celery worker` process work on this machine, the
ground the Celery fan-out of digest sends stands on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import redisserver

# The worker's app: one task, which says which process ran it.
WORKER_APP = """\
import os

from celery import Celery

app = Celery("roundtrip", broker=os.environ["ROUNDTRIP_BROKER"], backend=os.environ["ROUNDTRIP_BROKER"])
app.conf.broker_connection_retry_on_startup = True


@app.task(name="roundtrip.add")
def add(x, y):
    return {"sum": x + y, "pid": os.getpid()}
"""


def test_the_fixture_gives_a_working_redis(redis_url: str) -> None:
    import redis

    assert redis_url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("syndicate:test", "Past Lives")
        assert client.get("syndicate:test") == b"Past Lives"
        # No persistence: the server was started with `--save '' --appendonly no`.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.delete("syndicate:test")
        client.close()


def test_a_celery_worker_process_runs_a_task_through_the_broker(
    redis_url: str, tmp_path: Path
) -> None:
    from celery import Celery

    (tmp_path / "roundtrip_app.py").write_text(WORKER_APP, encoding="utf-8")
    env = {**os.environ, "ROUNDTRIP_BROKER": redis_url, "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "worker.log"
    started = time.monotonic()
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "roundtrip_app", "worker"),
                *("--pool", "threads", "--concurrency", "1", "--loglevel", "INFO"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                *("--hostname", f"roundtrip-{os.getpid()}@%h"),
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = Celery("client", broker=redis_url, backend=redis_url)
    client.conf.broker_connection_retry_on_startup = True
    try:
        result = client.send_task("roundtrip.add", args=(2, 3))
        try:
            answer = result.get(timeout=20)
        except Exception as exc:
            pytest.fail(f"no answer from the worker ({exc!r}); its log:\n{log.read_text()}")
        assert answer == {"sum": 5, "pid": worker.pid}
    finally:
        client.close()
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)
    elapsed = time.monotonic() - started
    assert worker.returncode == 0, f"worker exited {worker.returncode}:\n{log.read_text()}"
    assert elapsed < 20, f"the round trip took {elapsed:.1f} s"


# --- the CI rule: never a silent skip ----------------------------------------------------


def test_a_missing_redis_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SYNDICATE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no redis-server on it
    with pytest.raises(redisserver.RedisUnavailable) as missing:
        redisserver.find_redis_server()
    assert "apt-get install redis-server" in str(missing.value)

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        redisserver.give_up(missing.value)

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Redis is not available here"):
        redisserver.give_up(missing.value)
