"""A stand-in for SendGrid's v3 mail/send API on loopback (there is no internet here).

It checks each request against SendGrid's documented limits, records every recipient it
accepts, and misbehaves on demand (429 with X-RateLimit-Reset, 500, slow answers, dropped
connections), so tests and benchmarks exercise the real sendgrid library over real HTTP.

Run it as its own process (the tests and `bench/` do), so a test can kill the sender
without killing the witness:

    python -m tests.sendgrid_standin --port-file PATH

Control endpoints (JSON): GET /_standin/stats, GET /_standin/recipients,
GET /_standin/custom_args, GET /_standin/requests (bodies, with --keep-requests),
GET /_standin/calls (each mail/send request: when, and what it was answered),
POST /_standin/faults (a list of faults, each used by one request in turn),
POST /_standin/reset.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_SUBSTITUTION_BYTES = 10_000


class Ledger:
    """What the stand-in has seen; shared by the handler threads."""

    def __init__(self, keep_requests: bool = False) -> None:
        self.lock = threading.Lock()
        self.keep_requests = keep_requests
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.recipients: Counter[str] = Counter()
            self.custom_args: dict[str, dict[str, Any]] = {}
            self.requests = 0
            self.accepted = 0
            self.rejected: list[str] = []
            self.faults: list[dict[str, Any]] = []
            self.bodies: list[dict[str, Any]] = []
            # mail/send requests read but not yet answered: id -> when they arrived.
            self.in_flight: dict[int, float] = {}
            # One entry per mail/send request: when it came and went, and the answer.
            self.calls: list[dict[str, Any]] = []
            self.serial = 0

    def arrive(self) -> tuple[int, dict[str, Any] | None]:
        """Note a mail/send request whose body has been read; its id and fault, if any."""
        with self.lock:
            self.requests += 1
            self.serial += 1
            self.in_flight[self.serial] = time.time()
            return self.serial, (self.faults.pop(0) if self.faults else None)

    def leave(self, serial: int, answer: str, **details: Any) -> None:
        """Note the request's answer, just before it is written (or the line dropped)."""
        with self.lock:
            arrived = self.in_flight.pop(serial, time.time())  # gone if reset meanwhile
            self.calls.append(
                {"arrived": arrived, "answered": time.time(), "answer": answer, **details}
            )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            oldest = min(self.in_flight.values(), default=None)
            return {
                # Requests inside the stand-in (body read, not yet answered), and how long
                # the oldest of them has been there: a test can time a kill to land there.
                "in_flight": len(self.in_flight),
                "oldest_in_flight": None if oldest is None else time.time() - oldest,
                "requests": self.requests,
                "accepted_requests": self.accepted,
                "recipients": sum(self.recipients.values()),
                "distinct_recipients": len(self.recipients),
                "duplicates": sum(1 for n in self.recipients.values() if n > 1),
                "rejected": list(self.rejected),
                "faults_left": len(self.faults),
            }


def problems(body: Any) -> list[tuple[str, str]]:
    """(field, message) for each way the request breaks SendGrid's rules."""
    found: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        return [("", "the request body must be a JSON object")]
    people = body.get("personalizations")
    if not isinstance(people, list) or not people:
        return [("personalizations", "the personalizations field is required")]
    if len(people) > MAX_PERSONALIZATIONS:
        found.append(("personalizations", f"at most {MAX_PERSONALIZATIONS} personalizations"))
    recipients = sum(len(p.get(kind) or []) for p in people for kind in ("to", "cc", "bcc"))
    if recipients > MAX_RECIPIENTS:
        found.append(("personalizations", f"at most {MAX_RECIPIENTS} recipients per request"))
    for index, person in enumerate(people):
        if not person.get("to"):
            found.append((f"personalizations.{index}.to", "the to array is required"))
        subs = person.get("substitutions") or {}
        if len(json.dumps(subs).encode()) > MAX_SUBSTITUTION_BYTES:
            found.append((f"personalizations.{index}.substitutions", "over 10,000 bytes"))
        if not (person.get("subject") or body.get("subject")):
            found.append(("subject", "the subject is required"))
    sender = body.get("from") or {}
    if not sender.get("email"):
        found.append(("from.email", "the from address is required"))
    content = body.get("content") or []
    types = [c.get("type") for c in content]
    if not content:
        found.append(("content", "at least one content item is required"))
    elif "text/plain" in types and types[0] != "text/plain":
        found.append(("content", "text/plain must come first, then text/html"))
    return found


def make_handler(ledger: Ledger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read the ledger, not the log

        def _answer(self, status: int, payload: Any = None, headers: dict | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            if self.path == "/_standin/stats":
                self._answer(200, ledger.stats())
            elif self.path == "/_standin/recipients":
                with ledger.lock:
                    self._answer(200, dict(ledger.recipients))
            elif self.path == "/_standin/custom_args":
                with ledger.lock:
                    self._answer(200, ledger.custom_args)
            elif self.path == "/_standin/requests":
                with ledger.lock:
                    self._answer(200, ledger.bodies)
            elif self.path == "/_standin/calls":
                with ledger.lock:
                    self._answer(200, ledger.calls)
            else:
                self._answer(404, {"errors": [{"message": "not found"}]})

        def do_POST(self) -> None:
            raw = self._body()
            if self.path == "/_standin/faults":
                with ledger.lock:
                    ledger.faults.extend(json.loads(raw))
                self._answer(200, {"ok": True})
            elif self.path == "/_standin/reset":
                ledger.reset()
                self._answer(200, {"ok": True})
            elif self.path == "/v3/mail/send":
                self._mail_send(raw)
            else:
                self._answer(404, {"errors": [{"message": "not found"}]})

        def _mail_send(self, raw: bytes) -> None:
            serial, fault = ledger.arrive()
            if fault and fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if fault and fault.get("drop"):
                # Read the request, then hang up without a word: a dropped connection.
                ledger.leave(serial, "drop")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, payload, headers = self._judge(raw, fault)
            ledger.leave(serial, str(status), **{k.lower(): v for k, v in headers.items()})
            self._answer(status, payload, headers)

        def _judge(
            self, raw: bytes, fault: dict[str, Any] | None
        ) -> tuple[int, Any, dict[str, str]]:
            """The answer to one mail/send request; an accepted one is recorded."""
            if fault and fault.get("status"):
                status = int(fault["status"])
                headers = {}
                if status == 429:
                    reset = time.time() + float(fault.get("reset_in", 1))
                    headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
                    headers["X-RateLimit-Reset"] = str(int(reset) + (reset % 1 > 0))
                message = fault.get("message", f"stand-in fault {status}")
                return status, {"errors": [{"message": message}]}, headers
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return 401, {"errors": [{"message": "authorization required"}]}, {}
            if len(raw) > MAX_BODY_BYTES:
                return 413, {"errors": [{"message": "request over 30 MB"}]}, {}
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {"errors": [{"message": "the request body is not JSON"}]}, {}
            found = problems(body)
            if found:
                with ledger.lock:
                    ledger.rejected.extend(f"{f}: {m}" for f, m in found)
                errors = [{"field": f, "message": m, "help": None} for f, m in found]
                return 400, {"errors": errors}, {}
            with ledger.lock:
                ledger.accepted += 1
                if ledger.keep_requests:
                    ledger.bodies.append(body)
                for person in body["personalizations"]:
                    for kind in ("to", "cc", "bcc"):
                        for address in person.get(kind) or []:
                            ledger.recipients[address["email"].lower()] += 1
                            args = {**(body.get("custom_args") or {})}
                            args.update(person.get("custom_args") or {})
                            ledger.custom_args[address["email"].lower()] = args
            return 202, None, {"X-Message-Id": uuid.uuid4().hex[:22]}

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender killed mid-request leaves its answer nowhere to go: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(port: int = 0, keep_requests: bool = False) -> tuple[ThreadingHTTPServer, Ledger]:
    ledger = Ledger(keep_requests)
    server = Server(("127.0.0.1", port), make_handler(ledger))
    return server, ledger


class StandIn:
    """The stand-in running in a child process, and a client for its control endpoints."""

    def __init__(self, workdir: Path, keep_requests: bool = False) -> None:
        port_file = workdir / "standin.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "tests.sendgrid_standin", "--port-file", str(port_file)]
        if keep_requests:
            args.append("--keep-requests")
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.process = subprocess.Popen(args, cwd=root, env=env)
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the SendGrid stand-in did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._call("/_standin/stats")

    def recipients(self) -> dict[str, int]:
        return self._call("/_standin/recipients")

    def custom_args(self) -> dict[str, dict[str, Any]]:
        return self._call("/_standin/custom_args")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("/_standin/requests")

    def calls(self) -> list[dict[str, Any]]:
        """Each mail/send request: arrived, answered (epoch seconds), answer (status or
        'drop'), and the answer's headers in lower case (x-ratelimit-reset, ...)."""
        return self._call("/_standin/calls")

    def add_faults(self, *faults: dict[str, Any]) -> None:
        self._call("/_standin/faults", list(faults))

    def reset(self) -> None:
        self._call("/_standin/reset", {})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--keep-requests", action="store_true", help="keep bodies for tests")
    options = parser.parse_args()
    server, _ = serve(options.port, options.keep_requests)
    port = server.server_address[1]
    if options.port_file:
        temporary = options.port_file.with_suffix(".tmp")
        temporary.write_text(str(port))
        temporary.replace(options.port_file)
    else:
        print(f"SendGrid stand-in on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
