"""Running the web app under uvicorn: in the foreground (`syndicate serve`) or on a thread
beside the scheduler (`syndicate run` with `server.enabled`)."""

from __future__ import annotations

import threading
import time

import uvicorn

from syndicate.config import Config
from syndicate.web.app import create_app


def make_server(config: Config, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for the app; raises MissingSecret before listening on anything."""
    settings = config.server
    app = create_app(config)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.host,
            port=port or settings.port,
            log_level="info",
            # Behind a reverse proxy, its X-Forwarded-* headers name the client and the
            # scheme; uvicorn believes them from the configured proxies only.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=",".join(settings.trusted_proxies) or "127.0.0.1",
            server_header=False,
        )
    )


def serve_in_background(config: Config) -> tuple[uvicorn.Server, threading.Thread]:
    """Start the server on a thread and wait until it listens (or has failed to)."""
    server = make_server(config)
    thread = threading.Thread(target=server.run, name="syndicate-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise OSError(
            f"the web server could not listen on {config.server.host}:{config.server.port} "
            "(is the port in use? see the log above)"
        )
    return server, thread
