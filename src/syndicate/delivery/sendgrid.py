"""The SendGrid transport: one v3 mail/send request per batch of up to 1,000 subscribers.

The issue's HTML and text go in the request once; each subscriber is one personalization
carrying their own values as substitutions, their own List-Unsubscribe headers, and
custom_args that let webhook events be traced back to the issue and the subscriber.

What a failed request means decides what happens next (SendGrid's documented contract):
- 429: wait until X-RateLimit-Reset, then try again (does not count as a failure);
- 5xx, a dropped connection, a timeout: retry with capped exponential backoff and full
  jitter, `delivery.sendgrid.retries` times; after that the batch is left for the next run;
- any other 4xx: the request itself is wrong; every subscriber in it is marked failed with
  SendGrid's error text, and the rest of the issue goes on;
- except 401, 403, 404 and 405, and a host that cannot be reached at all: those say the
  API key, its permissions or the base URL are wrong, which every batch would meet alike.
  Nothing was sent, so the send stops (TransportUnavailable) with the batch put back,
  rather than failing the whole list for good.
A retried request after a timeout may already have been accepted, so a timeout risks one
duplicate for that batch; `delivery.sendgrid.timeout` is generous for that reason.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import time
import urllib.error
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import tenacity
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from syndicate.config import Config, secret
from syndicate.delivery.message import Letter, Outcome, Recipient
from syndicate.delivery.transports import TransportUnavailable
from syndicate.digest.render import PLACEHOLDER

log = logging.getLogger(__name__)

# A 429 is SendGrid asking us to slow down, not a failure; but never wait forever.
MAX_RATE_LIMIT_WAITS = 100
MAX_RATE_LIMIT_PAUSE = 120.0


class SendGridRefused(Exception):
    """SendGrid answered 4xx (other than 429): the request is wrong and retrying will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"SendGrid refused the request ({status}): {detail}")
        self.status = status


def error_text(error: http_errors.HTTPError) -> str:
    """SendGrid's own words from an error response: the messages of its `errors` list."""
    raw = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else error.body
    try:
        errors = json.loads(raw)["errors"]
        return "; ".join(
            f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"]) for e in errors
        )
    except (ValueError, KeyError, TypeError):
        return (raw or "").strip()[:500] or f"HTTP {error.status_code}"


# What a request can fail with besides an HTTP answer: refused, reset, timed out, cut off.
TRANSIENT_ERRORS = (
    http_errors.HTTPError,
    urllib.error.URLError,
    http.client.HTTPException,
    OSError,
)


# Answers that are about the account or the address, not the request: every batch gets them.
ACCOUNT_ERRORS = {
    401: "check the API key in the environment variable {env}",
    403: "check that the API key in {env} may send mail and that the from address is a "
    "verified sender",
    404: "check delivery.sendgrid.base_url ({url})",
    405: "check delivery.sendgrid.base_url ({url})",
}


def _unreachable(error: BaseException) -> bool:
    """No connection could be made at all (refused, unknown host): nothing was sent."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    return isinstance(error, ConnectionRefusedError | socket.gaierror)


def api_host(base_url: str) -> str:
    """The host the library adds /v3/... to: the base URL without a trailing slash or /v3,
    which SendGrid's docs show for the EU host (https://api.eu.sendgrid.com/v3/)."""
    return base_url.rstrip("/").removesuffix("/v3").rstrip("/")


def _transient(error: BaseException) -> bool:
    if isinstance(error, http_errors.HTTPError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, TRANSIENT_ERRORS)


def _rate_limit_pause(error: BaseException | None, now: float) -> float | None:
    """Seconds until X-RateLimit-Reset for a 429; None for any other failure."""
    if not isinstance(error, http_errors.HTTPError) or error.status_code != 429:
        return None
    try:
        reset = float((error.headers or {}).get("X-RateLimit-Reset"))
    except (TypeError, ValueError):
        return 1.0  # no usable header: a short pause, then try again
    return min(max(reset - now, 0.0) + random.uniform(0, 0.25), MAX_RATE_LIMIT_PAUSE)


@lru_cache(maxsize=8)
def _compiled(letter: Letter) -> tuple[str, str, frozenset[str], frozenset[str]]:
    """The HTML with its placeholders renamed (their values are HTML-escaped), and which
    placeholders the text/subject and the HTML use. Done once per issue, not per batch."""
    html = PLACEHOLDER.sub(lambda m: f"%%{m.group(1)}__html%%", letter.html)
    plain_keys = frozenset(PLACEHOLDER.findall(letter.text + letter.subject))
    html_keys = frozenset(PLACEHOLDER.findall(letter.html))
    return html, letter.text, plain_keys, html_keys


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


class SendGridTransport:
    """Sends each batch as one request through the official `sendgrid` library."""

    name = "sendgrid"

    def __init__(self, config: Config, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = config.delivery.sendgrid
        api_key = secret(self.settings.api_key_env, "SendGrid API key")
        self.client = SendGridAPIClient(api_key, host=api_host(self.settings.base_url))
        self.client.client.timeout = self.settings.timeout
        self.concurrency = self.settings.concurrency
        self.sleep = sleep

    def request_body(self, letter: Letter, recipients: Sequence[Recipient]) -> dict[str, Any]:
        html, text, plain_keys, html_keys = _compiled(letter)
        body: dict[str, Any] = {
            "from": {"email": letter.sender_email, "name": letter.sender_name},
            "subject": letter.subject,
            "content": [
                {"type": "text/plain", "value": text},
                {"type": "text/html", "value": html},
            ],
            "personalizations": [
                self._person(r, letter, plain_keys, html_keys) for r in recipients
            ],
            "custom_args": {"digest": letter.digest, "issue_id": str(letter.issue_id)},
            "headers": {"List-Id": letter.list_id, "Precedence": "bulk"} if letter.bulk else {},
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if letter.reply_to:
            body["reply_to"] = {"email": letter.reply_to}
        if self.settings.categories:
            body["categories"] = list(self.settings.categories)
        if self.settings.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    @staticmethod
    def _person(
        recipient: Recipient, letter: Letter, plain_keys: frozenset[str], html_keys: frozenset[str]
    ) -> dict[str, Any]:
        values = recipient.values
        to = {"email": recipient.email}
        if recipient.name:
            to["name"] = recipient.name
        substitutions = {f"%%{k}%%": values.get(k, "") for k in plain_keys}
        substitutions.update({f"%%{k}__html%%": _escape(values.get(k, "")) for k in html_keys})
        person: dict[str, Any] = {
            "to": [to],
            "substitutions": substitutions,
            "custom_args": {"subscriber_id": str(recipient.subscriber_id)},
        }
        if letter.bulk:
            unsubscribe = f"<{values['unsubscribe_url']}>"
            if letter.unsubscribe_mailto:
                unsubscribe += f", <mailto:{letter.unsubscribe_mailto}?subject=unsubscribe>"
            person["headers"] = {
                "List-Unsubscribe": unsubscribe,
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return person

    def post(self, body: dict[str, Any]) -> str:
        """POST one request, retrying what is worth retrying; the X-Message-Id of the 202."""
        failures = 0
        waits = 0

        def should_stop(state: tenacity.RetryCallState) -> bool:
            nonlocal failures, waits
            error = state.outcome.exception() if state.outcome else None
            if _rate_limit_pause(error, time.time()) is not None:
                waits += 1
                return waits > MAX_RATE_LIMIT_WAITS
            failures += 1
            return failures > self.settings.retries

        backoff = tenacity.wait_random_exponential(multiplier=0.5, max=self.settings.max_backoff)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            pause = _rate_limit_pause(error, time.time())
            return backoff(state) if pause is None else pause

        def note(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            reason = (
                f"{error.status_code} {error_text(error)}"
                if isinstance(error, http_errors.HTTPError)
                else f"{type(error).__name__}: {error}"
            )
            pause = state.next_action.sleep if state.next_action else 0
            log.warning("SendGrid: %s; trying again in %.1f s", reason, pause)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=should_stop,
            wait=wait,
            sleep=self.sleep,
            before_sleep=note,
            reraise=True,
        )
        try:
            response = retrying(lambda: self.client.client.mail.send.post(request_body=body))
        except http_errors.HTTPError as error:
            if _transient(error):
                raise
            hint = ACCOUNT_ERRORS.get(error.status_code)
            if hint is not None:
                raise TransportUnavailable(
                    f"SendGrid refused the request ({error.status_code}: {error_text(error)}); "
                    + hint.format(env=self.settings.api_key_env, url=self.settings.base_url)
                ) from None
            raise SendGridRefused(error.status_code, error_text(error)) from None
        except TRANSIENT_ERRORS as error:
            if _unreachable(error):
                raise TransportUnavailable(
                    f"SendGrid cannot be reached at {self.settings.base_url} "
                    f"({type(error).__name__}: {error}); check delivery.sendgrid.base_url "
                    "and the network"
                ) from None
            raise
        return response.headers.get("X-Message-Id", "")

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        if not recipients:
            return []
        try:
            message_id = self.post(self.request_body(letter, recipients))
        except SendGridRefused as refused:
            error = str(refused)
            return [
                Outcome(r.subscriber_id, False, error=error, permanent=True) for r in recipients
            ]
        except TRANSIENT_ERRORS as exc:  # the retries ran out: the next run tries again
            if isinstance(exc, http_errors.HTTPError):
                error = f"SendGrid answered {exc.status_code}: {error_text(exc)}"
            else:
                error = f"SendGrid could not be reached: {type(exc).__name__}: {exc}"
            return [Outcome(r.subscriber_id, False, error=error) for r in recipients]
        return [Outcome(r.subscriber_id, True, message_id) for r in recipients]

    def close(self) -> None:
        pass
