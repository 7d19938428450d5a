"""The SMTP transport against a real SMTP server (aiosmtpd) on the loopback interface:
plain, STARTTLS, AUTH, refused recipients, and a server that is not there."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import re
import shutil
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from syndicate.cli import cli
from syndicate.store import Delivery, Store, Subscriber
from tests.conftest import EXAMPLE_READERS, Site

SENDER = "newsletter@reelnotes.example.com"
READERS = set(EXAMPLE_READERS)
USER, PASSWORD = "reelnotes", "correct horse battery staple"


# --- the server --------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    user: bytes | None


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses what it is told to."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    # address -> SMTP reply for its RCPT TO; a 4xx reply is given once, then it is accepted.
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.refuse.get(address)
        if reply is not None:
            if reply.startswith("4"):
                del self.refuse[address]
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or b""),
                session.ssl is not None,
                login if session.authenticated else None,
            )
        )
        return "250 Message accepted for delivery"

    @property
    def recipients(self) -> list[str]:
        return sorted(address for r in self.received for address in r.rcpt_tos)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


StartServer = Callable[..., Mailbox]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Starts an SMTP server on 127.0.0.1 (a free port unless given) with aiosmtpd options."""
    controllers: list[Controller] = []

    def start(port: int | None = None, **options: Any) -> Mailbox:
        mailbox = Mailbox(port=port or free_port())
        controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **options)
        controller.start()
        controllers.append(controller)
        return mailbox

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, as a small server's own CA would make."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reel Notes test mail server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# --- the site ----------------------------------------------------------------------------


@pytest.fixture
def newsletter(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The example site with its reviews gathered and the six example subscribers."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    site.cli("gather")
    site.cli("subscribers", "import", "subscribers.csv")
    return site


def use_smtp(site: Site, port: int, **smtp: Any) -> None:
    """Point the site's delivery section at the SMTP server on 127.0.0.1:port."""
    data = yaml.safe_load(site.config_path.read_text(encoding="utf-8"))
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 5,
        **smtp,
    }
    site.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def send_refused(site: Site) -> str:
    """Run `syndicate digest send weekly`, which must fail; what the editor reads."""
    result = site.runner.invoke(
        cli, ["--config", str(site.config_path), "digest", "send", "weekly"]
    )
    assert result.exit_code != 0, result.output
    if result.exception is None or isinstance(result.exception, SystemExit):
        return result.output
    # Not turned into a message by the CLI: the editor reads the traceback's last line.
    return f"{result.output}{type(result.exception).__name__}: {result.exception}"


def deliveries(site: Site) -> dict[str, Delivery]:
    with Store(site.config.database_url) as store, store.session() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
        return {address: delivery for address, delivery in rows}  # noqa: C416


def comparable(raw: bytes) -> bytes:
    """A message's bytes without what differs from one sending to the next: Date,
    Message-ID and the MIME boundary; with LF line ends."""
    raw = raw.replace(b"\r\n", b"\n")
    boundary = email.message_from_bytes(raw, policy=email.policy.default).get_boundary()
    assert boundary
    raw = raw.replace(boundary.encode(), b"BOUNDARY")
    head, body = raw.split(b"\n\n", 1)
    head = re.sub(rb"^(Date|Message-ID):.*\n(?:[ \t].*\n)*", b"", head + b"\n", flags=re.M | re.I)
    return head + b"\n" + body


# --- tests -------------------------------------------------------------------------------


def test_plain_smtp_delivers_what_the_outbox_would_write(
    newsletter: Site, smtp_server: StartServer, tmp_path: Path
) -> None:
    # A twin of the site, same database and subscribers, that keeps the outbox transport.
    twin = Site(tmp_path / "twin", CliRunner())
    shutil.copytree(newsletter.root, twin.root)
    server = smtp_server()
    use_smtp(newsletter, server.port)

    result = newsletter.cli("digest", "send", "weekly")
    assert "6 sent, 0 failed" in result.output
    assert not newsletter.emails()  # nothing went to the outbox
    assert server.recipients == sorted(READERS)
    assert all(r.mail_from == SENDER and len(r.rcpt_tos) == 1 for r in server.received)

    twin.cli("digest", "send", "weekly")
    written = {}
    for path in twin.emails():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        written[message["To"].addresses[0].addr_spec] = path.read_bytes()
    for received in server.received:
        assert comparable(received.data) == comparable(written[received.rcpt_tos[0]])

    again = newsletter.cli("digest", "send", "weekly")
    assert "nothing new" in again.output
    assert len(server.received) == 6


def test_starttls_with_a_trusted_self_signed_certificate(
    newsletter: Site,
    smtp_server: StartServer,
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server(tls_context=certificate.server_context(), require_starttls=True)
    use_smtp(newsletter, server.port, security="starttls")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))

    result = newsletter.cli("digest", "send", "weekly")

    assert "6 sent, 0 failed" in result.output
    assert server.recipients == sorted(READERS)
    assert all(r.tls for r in server.received)


def test_an_untrusted_certificate_is_refused_and_nothing_is_marked_sent(
    newsletter: Site,
    smtp_server: StartServer,
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server(tls_context=certificate.server_context(), require_starttls=True)
    use_smtp(newsletter, server.port, security="starttls")

    error = send_refused(newsletter)

    assert f"127.0.0.1:{server.port}" in error
    assert "certificate" in error and "not trusted" in error and "SSL_CERT_FILE" in error
    assert server.received == []
    # Nothing marked sent, failed or retried: every reader is still queued.
    assert {d.status for d in deliveries(newsletter).values()} == {Delivery.QUEUED}
    status = newsletter.cli("digest", "status", "weekly").output
    assert (
        "6 subscribers: 0 accepted, 6 pending, 0 failed" in status and "6 not reached yet" in status
    )

    # Once the certificate is trusted, the same issue goes to everyone.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    assert "issue 1 of weekly: 6 sent" in newsletter.cli("digest", "send", "weekly").output
    assert server.recipients == sorted(READERS)


def check_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd answers 535 itself when the login is wrong.
    return AuthResult(success=ok, handled=False, auth_data=data)


def test_auth_uses_the_credentials_from_the_environment(
    newsletter: Site,
    smtp_server: StartServer,
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server(
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=check_login,
        auth_required=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    # No credentials in the config: the server refuses the sender, not the subscribers.
    use_smtp(newsletter, server.port, security="starttls")
    error = send_refused(newsletter)
    assert f"refused the sender {SENDER}" in error and "530" in error
    # Nothing marked sent, failed or retried: every reader is still queued.
    assert {d.status for d in deliveries(newsletter).values()} == {Delivery.QUEUED}

    use_smtp(
        newsletter,
        server.port,
        security="starttls",
        username_env="SMTP_USER",
        password_env="SMTP_PASSWORD",
    )
    monkeypatch.setenv("SMTP_USER", USER)
    monkeypatch.setenv("SMTP_PASSWORD", "Tr0ub4dor&3")  # the wrong one

    error = send_refused(newsletter)

    assert "refused the login" in error and "535" in error
    assert "SMTP_USER" in error and "SMTP_PASSWORD" in error
    assert "Tr0ub4dor&3" not in error  # names the variable, never shows the secret
    assert server.received == []
    # Nothing marked sent, failed or retried: every reader is still queued.
    assert {d.status for d in deliveries(newsletter).values()} == {Delivery.QUEUED}

    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    assert "issue 1 of weekly: 6 sent" in newsletter.cli("digest", "send", "weekly").output
    assert server.recipients == sorted(READERS)
    assert {r.user for r in server.received} == {USER.encode()}


def test_a_refused_recipient_fails_and_the_others_are_sent(
    newsletter: Site, smtp_server: StartServer
) -> None:
    server = smtp_server()
    server.refuse["kwame.boateng@example.net"] = "550 5.1.1 No such user here"
    use_smtp(newsletter, server.port)

    result = newsletter.cli("digest", "send", "weekly", ok=False)

    assert "5 sent, 1 failed" in result.output and "(complete)" in result.output
    assert "kwame.boateng@example.net: SMTP 550" in result.output
    assert server.recipients == sorted(READERS - {"kwame.boateng@example.net"})
    kwame = deliveries(newsletter)["kwame.boateng@example.net"]
    assert kwame.status == Delivery.FAILED and "No such user here" in kwame.error
    status = newsletter.cli("digest", "status", "weekly").output
    assert (
        "6 subscribers: 5 accepted, 0 pending, 1 failed" in status
        and "SMTP 550: 5.1.1 No such user here" in status
    )

    assert "nothing new" in newsletter.cli("digest", "send", "weekly").output
    assert len(server.received) == 5  # a permanent failure is not retried


def test_a_temporary_refusal_is_retried_by_the_next_send(
    newsletter: Site, smtp_server: StartServer
) -> None:
    server = smtp_server()
    server.refuse["lena.novak@example.net"] = "451 4.7.1 Greylisted, try again later"
    use_smtp(newsletter, server.port)

    first = newsletter.cli("digest", "send", "weekly")
    assert "5 sent, 0 failed, 1 to retry" in first.output
    lena = deliveries(newsletter)["lena.novak@example.net"]
    assert lena.status == Delivery.RETRY and "Greylisted" in lena.error

    second = newsletter.cli("digest", "send", "weekly")
    assert "issue 1 of weekly: 1 sent, 0 failed" in second.output
    assert "(complete)" in second.output
    assert server.recipients == sorted(READERS)  # everyone once, Lena included
    assert deliveries(newsletter)["lena.novak@example.net"].status == Delivery.SENT


def test_a_server_that_is_down_stops_the_send_and_nothing_is_marked_sent(
    newsletter: Site, smtp_server: StartServer
) -> None:
    port = free_port()  # nothing listens here
    use_smtp(newsletter, port)

    error = send_refused(newsletter)

    assert f"cannot connect to the SMTP server 127.0.0.1:{port}" in error
    # Nothing marked sent, failed or retried: every reader is still queued.
    assert {d.status for d in deliveries(newsletter).values()} == {Delivery.QUEUED}
    status = newsletter.cli("digest", "status", "weekly").output
    assert (
        "6 subscribers: 0 accepted, 6 pending, 0 failed" in status and "6 not reached yet" in status
    )

    server = smtp_server(port=port)  # the server is back
    assert "issue 1 of weekly: 6 sent" in newsletter.cli("digest", "send", "weekly").output
    assert server.recipients == sorted(READERS)
