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


class TransportUnavailable(Exception):
    """The transport cannot send at all (no connection, TLS or login refused).

    Raised by `send` only when nothing in the batch was handed over, so the batch can be
    put back as unsent and the send stopped until the problem is fixed.
    """


class Transport(Protocol):
    name: str
    # Batches it can send at once from several threads; transports without the attribute
    # (not thread-safe, like one SMTP connection) get one.
    concurrency: int

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]: ...

    def close(self) -> None: ...


def _unbuildable(recipient: Recipient, exc: Exception) -> Outcome:
    return Outcome(
        recipient.subscriber_id, False, error=f"cannot build the message: {exc}", permanent=True
    )


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
            try:
                message = build_message(letter, recipient)
                data = message.as_bytes()
            except (ValueError, TypeError, LookupError) as exc:
                outcomes.append(_unbuildable(recipient, exc))
                continue
            try:
                write_if_changed(self.path_for(letter, recipient), data)
            except OSError as exc:
                outcomes.append(Outcome(recipient.subscriber_id, False, error=str(exc)))
                continue
            outcomes.append(Outcome(recipient.subscriber_id, True, message["Message-ID"]))
        return outcomes

    def close(self) -> None:
        pass


class SmtpTransport:
    """Sends through an SMTP server over one connection, STARTTLS or SSL.

    Certificates are checked against the system's CA store (or the bundle named by the
    SSL_CERT_FILE environment variable). A server that cannot be reached, a certificate
    that is not trusted, or a refused login raise TransportUnavailable before anything is
    sent; a refused recipient is that recipient's outcome (5xx permanent, 4xx retried).
    """

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

    @property
    def server(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        client: smtplib.SMTP | None = None
        try:
            if s.security == "ssl":
                client = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=self.ssl_context
                )
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    client.starttls(context=self.ssl_context)
            if self.username and self.password:
                client.login(self.username, self.password)
            return client
        except Exception as exc:
            if client is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    client.close()
            raise TransportUnavailable(self._explain(exc)) from exc

    def _explain(self, exc: Exception) -> str:
        s = self.settings
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the SMTP server {self.server} presented a certificate that is not trusted "
                f"({exc.verify_message}); use a certificate from a trusted authority, or "
                f"point SSL_CERT_FILE at the CA bundle that signed it"
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = exc.smtp_error.decode(errors="replace")
            return (
                f"the SMTP server {self.server} refused the login "
                f"(SMTP {exc.smtp_code}: {reply}); check the user name in "
                f"{s.username_env} and the password in {s.password_env}"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return f"the SMTP server {self.server} cannot do what delivery.smtp asks for: {exc}"
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = exc.smtp_error.decode(errors="replace")
            return (
                f"the SMTP server {self.server} refused the session: SMTP {exc.smtp_code}: {reply}"
            )
        return f"cannot connect to the SMTP server {self.server}: {exc}"

    def send(self, letter: Letter, recipients: Sequence[Recipient]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, recipient in enumerate(recipients):
            try:
                message = build_message(letter, recipient)
            except (ValueError, TypeError, LookupError) as exc:
                outcomes.append(_unbuildable(recipient, exc))
                continue
            try:
                outcomes.append(self._send_one(message, recipient))
            except TransportUnavailable as exc:
                if not any(o.ok for o in outcomes):
                    raise  # nothing handed over: the batch can be put back as unsent
                # Some of the batch went: the rest are not tried now, but retried later.
                outcomes += [
                    Outcome(r.subscriber_id, False, error=str(exc)) for r in recipients[index:]
                ]
                break
        return outcomes

    def _send_one(self, message: EmailMessage, recipient: Recipient) -> Outcome:
        for attempt in (1, 2):
            if self._client is None:
                self._client = self._connect()
            try:
                self._client.send_message(message, to_addrs=[recipient.email])
                return Outcome(recipient.subscriber_id, True, message["Message-ID"])
            except smtplib.SMTPSenderRefused as exc:
                # Not about this recipient: the server will take nothing from us (for
                # example it wants a login the config does not give).
                reply = exc.smtp_error.decode(errors="replace")
                raise TransportUnavailable(
                    f"the SMTP server {self.server} refused the sender {exc.sender} "
                    f"(SMTP {exc.smtp_code}: {reply})"
                ) from exc
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
            except smtplib.SMTPServerDisconnected as exc:
                lost: Exception = exc
            except smtplib.SMTPException as exc:
                # e.g. an address that needs SMTPUTF8 when the server does not offer it.
                return Outcome(recipient.subscriber_id, False, error=str(exc), permanent=True)
            except OSError as exc:  # after SMTPException, which is an OSError too
                lost = exc
            # The connection went away (servers close idle ones): reconnect once.
            self.close()
            if attempt == 2:
                raise TransportUnavailable(
                    f"the connection to the SMTP server {self.server} was lost: {lost}"
                ) from lost
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._client.quit()
            self._client = None


def open_transport(config: Config) -> Transport:
    """The transport `delivery.transport` names; credentials are read from the environment."""
    if config.delivery.transport == "smtp":
        return SmtpTransport(config)
    if config.delivery.transport == "sendgrid":
        from syndicate.delivery.sendgrid import SendGridTransport  # its library loads slowly

        return SendGridTransport(config)
    return OutboxTransport(config.resolve(config.delivery.outbox))
