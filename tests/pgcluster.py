"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary folder, start, stop.

`throwaway_cluster()` starts a fresh cluster (trust auth, fsync off, a free port on
127.0.0.1, its unix socket inside the temporary folder) and yields an admin SQLAlchemy URL;
on exit the server is stopped with `-m immediate` and the folder removed. initdb refuses
to run as root, so under root the server binaries run as the `postgres` user.
`create_database(admin_url, name)` makes an empty database in it and returns its URL.

Set SYNDICATE_PG_BIN to the folder holding initdb and pg_ctl to pick a particular build.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

SERVICE_USER = "postgres"
START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections
START_ATTEMPTS = 3  # a fresh port each time, in case another process took ours


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (binaries, user or startup missing)."""


def find_bin_dir() -> Path:
    """The folder with initdb, pg_ctl and postgres: $SYNDICATE_PG_BIN, $PATH, then Debian's."""
    candidates: list[Path] = []
    if override := os.environ.get("SYNDICATE_PG_BIN"):
        candidates.append(Path(override))
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    versioned = Path("/usr/lib/postgresql").glob("*/bin")  # Debian/Ubuntu: newest first
    candidates.extend(
        sorted(versioned, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0), reverse=True)
    )
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable(
        "initdb/pg_ctl/postgres not found on $PATH or in /usr/lib/postgresql/*/bin "
        "(install the PostgreSQL server, or set SYNDICATE_PG_BIN)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_service_user() -> list[str]:
    """The command prefix that runs the server binaries as a user initdb accepts."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and `runuser` is not available")
    try:
        import pwd

        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root (initdb refuses to) and there is no {SERVICE_USER!r} user"
        ) from None
    return [runuser, "-u", SERVICE_USER, "--"]


def _run(command: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{command[-1]}: {exc}") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise PostgresUnavailable(f"{' '.join(command)} exited {result.returncode}: {output}")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a fresh PostgreSQL cluster; yield its admin URL; stop and delete it after."""
    bin_dir = find_bin_dir()
    prefix = _as_service_user()
    home = Path(tempfile.mkdtemp(prefix="syndicate-pg-"))
    data, sockets, log = home / "data", home / "sockets", home / "server.log"
    may_be_running = False
    try:
        sockets.mkdir()
        if prefix:  # root: hand the folder to the service user so it can write there
            for path in (home, sockets):
                shutil.chown(path, user=SERVICE_USER, group=None)
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "--no-sync",
                "-U",
                SERVICE_USER,
                "-E",
                "UTF8",
                "--locale=C",
            ],
            cwd=home,
        )
        for attempt in range(1, START_ATTEMPTS + 1):
            port = _free_port()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": f"'{sockets}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
            }
            with (data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            may_be_running = True  # from here on, stop whatever pg_ctl may have started
            try:
                _run(
                    [
                        *prefix,
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(START_TIMEOUT),
                        "start",
                    ],
                    cwd=home,
                )
                break
            except PostgresUnavailable as exc:
                if attempt == START_ATTEMPTS:
                    server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise PostgresUnavailable(f"{exc}\n{server_log}") from None
                time.sleep(0.2)
        yield f"postgresql+psycopg://{SERVICE_USER}@127.0.0.1:{port}/postgres"
    finally:
        if may_be_running:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [
                        *prefix,
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    cwd=home,
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
        shutil.rmtree(home, ignore_errors=True)


_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database `name` on the cluster behind admin_url; return its URL."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain lower-case database name: {name!r}")
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)
