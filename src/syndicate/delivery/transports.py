"""Transports: how letters leave. `outbox` writes .eml files; `smtp` hands them to a server.

A transport takes one letter and a batch of recipients and reports an outcome for each,
so a batch provider (one API request per batch) fits the same shape.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from syndicate.config import Config, secret
from syndicate.delivery.message import Letter, Outcome, Recipient, build_message
from syndicate.output import write_if_changed

log = logging.getLogger(__name__)


class Transport(Protocol):
    name: str

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]: ...

    def close(self) -> None: ...


class OutboxTransport:
    """One .eml file per message in a folder: for trying things out, and for tests."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, letter: Letter, recipient: Recipient) -> Path:
        return self.folder / f"{letter.tag}-{recipient.subscriber_id}.eml"

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        outcomes = []
        for recipient in recipients:
            message = build_message(letter, recipient)
            try:
                write_if_changed(self.path_for(letter, recipient), message.as_bytes())
            except OSError as exc:
                outcomes.append(Outcome(recipient.subscriber_id, False, error=str(exc)))
                continue
            outcomes.append(Outcome(recipient.subscriber_id, True, message["Message-ID"]))
        return outcomes

    def close(self) -> None:
        pass


class SmtpTransport:
    """Sends through an SMTP server, one connection per batch, STARTTLS or SSL."""

    name = "smtp"

    def __init__(self, config: Config, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = config.delivery.smtp
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.username = (
            secret(self.settings.username_env, "SMTP user name")
            if self.settings.username_env
            else None
        )
        self.password = (
            secret(self.settings.password_env, "SMTP password")
            if self.settings.password_env
            else None
        )
        self._client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        client: smtplib.SMTP
        if s.security == "ssl":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.ssl_context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                client.starttls(context=self.ssl_context)
        if self.username and self.password:
            client.login(self.username, self.password)
        return client

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for recipient in recipients:
            message = build_message(letter, recipient)
            outcomes.append(self._send_one(message, recipient))
        return outcomes

    def _send_one(self, message: EmailMessage, recipient: Recipient) -> Outcome:
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._connect()
                self._client.send_message(message, to_addrs=[recipient.email])
                return Outcome(recipient.subscriber_id, True, message["Message-ID"])
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                return Outcome(
                    recipient.subscriber_id,
                    False,
                    error=f"SMTP {code}: {reply.decode(errors='replace')}",
                    permanent=code >= 500,
                )
            except smtplib.SMTPResponseException as exc:
                return Outcome(
                    recipient.subscriber_id,
                    False,
                    error=f"SMTP {exc.smtp_code}: {exc.smtp_error.decode(errors='replace')}",
                    permanent=exc.smtp_code >= 500,
                )
            except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError, OSError) as exc:
                # The connection went away: reconnect once, then report a temporary failure.
                self.close()
                if attempt == 2:
                    return Outcome(
                        recipient.subscriber_id,
                        False,
                        error=f"SMTP connection to {self.settings.host}:{self.settings.port} failed: {exc}",
                    )
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._client.quit()
            self._client = None


def open_transport(config: Config) -> Transport:
    if config.delivery.transport == "smtp":
        return SmtpTransport(config)
    return OutboxTransport(config.resolve(config.delivery.outbox))
