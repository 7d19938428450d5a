"""A throwaway Redis server for the tests: Debian's redis-server on a free loopback port.

`throwaway_redis()` starts `redis-server` in the foreground in a temporary folder of its
own (127.0.0.1 only, no RDB snapshots, no append-only file), waits until it answers PING,
yields `redis://127.0.0.1:PORT/0`, then stops it (SIGTERM, SIGKILL if it lingers) and
removes the folder. The session fixture `redis_url` wraps it, one server per test worker
under pytest-xdist. A missing redis-server skips the tests that need it, except under
CI=true, where they fail naming what to install (tests/setup/redis.sh does it as root).

Set SYNDICATE_REDIS_SERVER to the path of a redis-server binary to pick a particular build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

START_TIMEOUT = 10  # seconds to wait for the server to answer PING
START_ATTEMPTS = 3  # a fresh port each time, in case another process took ours
INSTALL_HINT = "apt-get install redis-server (tests/setup/redis.sh does it when run as root)"


class RedisUnavailable(RuntimeError):
    """No Redis server could be started here (binary missing, or it would not start)."""


def redis_required() -> bool:
    """Under CI=true a test that needs Redis must run: never a silent skip."""
    return os.environ.get("CI", "").lower() == "true"


def find_redis_server() -> str:
    """The redis-server binary: $SYNDICATE_REDIS_SERVER, else the one on $PATH."""
    found = os.environ.get("SYNDICATE_REDIS_SERVER") or shutil.which("redis-server")
    if not found or not os.access(found, os.X_OK):
        where = os.environ.get("SYNDICATE_REDIS_SERVER") or "on $PATH"
        raise RedisUnavailable(f"redis-server not found ({where}); install it: {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start(binary: str, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port; return it once it answers PING."""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = _free_port()
        command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(home),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(log),
        ]
        try:
            process = subprocess.Popen(
                command, cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
        except OSError as exc:
            raise RedisUnavailable(f"{binary}: {exc}") from exc
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping(port):
                return process, port
            time.sleep(0.05)
        _stop(process)
        if attempt == START_ATTEMPTS:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RedisUnavailable(
                f"{binary} did not answer PING on 127.0.0.1:{port} within {START_TIMEOUT} s "
                f"(exit status {process.returncode}):\n{server_log}"
            )
    raise AssertionError("unreachable")


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """Start a fresh Redis server; yield its URL; stop it and delete its folder after."""
    binary = find_redis_server()
    home = Path(tempfile.mkdtemp(prefix="syndicate-redis-"))
    try:
        process, port = _start(binary, home, home / "server.log")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def give_up(reason: object) -> NoReturn:
    """Skip for want of Redis; under CI=true, fail instead."""
    if redis_required():
        pytest.fail(f"Redis is required under CI=true but could not start: {reason}", pytrace=False)
    pytest.skip(f"Redis is not available here: {reason}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throwaway Redis server per test worker: `redis://127.0.0.1:PORT/0`."""
    problem: RedisUnavailable | None = None
    try:
        with throwaway_redis() as url:
            yield url
    except RedisUnavailable as exc:
        problem = exc
    if problem is not None:  # outside the except: the report is the reason, not a traceback
        give_up(problem)
