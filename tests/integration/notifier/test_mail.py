"""The email channel against a real SMTP server (aiosmtpd, in process) and the file:// transport."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import ipaddress
import socket
import ssl
import threading
import uuid
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from icalendar import Calendar

from services.notifier.mail import (
    DEFAULT_MAIL_FROM,
    EmailSender,
    configured_mail_from,
    configured_mail_url,
    parse_mail_url,
)
from services.notifier.models import Notification
from tests.unit.notifier import samples

# The auth tests run without TLS on purpose (the STARTTLS test covers TLS); aiosmtpd warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

EVENTS = samples.all_events()
DUE_SOON = EVENTS["refstd.scheduler.recalibration.due_soon"]
CONFIRMED = EVENTS["refstd.scheduler.booking.confirmed"]
CANCELLED = EVENTS["refstd.scheduler.booking.cancelled"]
MAIL_FROM = "refstd 计量院通知 <noreply@refstd.example>"


def notification(event: dict, recipient: str, name: str | None = None, locale: str | None = "zh-CN",
                 id: str | None = None) -> Notification:
    return Notification(id=id or str(uuid.uuid4()), event_id=event["id"], event_type=event["type"], event=event,
                        channel="email", recipient=recipient, recipient_name=name, locale=locale,
                        status="pending", attempts=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """aiosmtpd handler: records every accepted message and every connection that said EHLO; replies
    scripted per recipient (``refuse[address] = ["451 ...", ...]``) are used up one per RCPT."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.peers: list = []
        self.messages: list[dict] = []
        self.refuse: dict[str, list[str]] = {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            if session.peer not in self.peers:
                self.peers.append(session.peer)
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            script = self.refuse.get(address)
            if script:
                return script.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append({
                "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "raw": envelope.content,
                "message": email.message_from_bytes(envelope.content, policy=policy.default),
                "peer": session.peer, "tls": session.ssl is not None, "authenticated": session.authenticated,
            })
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    """``start(**smtp_options)`` -> (controller, mailbox, port); every server is stopped afterwards."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox | None = None, port: int | None = None, **options):
        mailbox = mailbox or Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port or free_port(), **options)
        controller.start()
        controllers.append(controller)
        return controller, mailbox, controller.port

    yield start
    for controller in controllers:
        with contextlib.suppress(AssertionError):  # already stopped by the test
            controller.stop()


def parts(message) -> dict[str, list]:
    found: dict[str, list] = {}
    for part in message.walk():
        if not part.is_multipart():
            found.setdefault(part.get_content_type(), []).append(part)
    return found


class TestBatchOverSmtp:
    def test_a_batch_of_three_goes_over_one_connection(self, smtp_server):
        _, mailbox, port = smtp_server()
        batch = [
            notification(DUE_SOON, "wang@example.com", "王工", "zh-CN"),
            notification(DUE_SOON, "anna@example.com", "Anna Keller", "en"),
            notification(CONFIRMED, "zhang@example.edu", "Prof. Zhang", "en"),
        ]
        sender = EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM)
        try:
            outcomes = sender.send(batch)
        finally:
            sender.close()

        assert [outcome.ok for outcome in outcomes] == [True, True, True]
        assert all(outcome.status_code == 250 and outcome.duration_ms is not None for outcome in outcomes)
        assert len(mailbox.messages) == 3
        assert len(mailbox.peers) == 1 and sender.connections_opened == 1
        assert {m["peer"] for m in mailbox.messages} == set(mailbox.peers)

        chinese, english, booking = (m["message"] for m in mailbox.messages)
        assert [m["rcpt_tos"] for m in mailbox.messages] == [["wang@example.com"], ["anna@example.com"],
                                                             ["zhang@example.edu"]]
        assert all(m["mail_from"] == "noreply@refstd.example" for m in mailbox.messages)
        for received, sent in zip((chinese, english, booking), batch, strict=True):
            assert received["Message-ID"] == f"<{sent.id}@refstd>"
            assert received["To"].addresses[0].addr_spec == sent.recipient
            assert received["To"].addresses[0].display_name == sent.recipient_name
            assert received["From"].addresses[0].display_name == "refstd 计量院通知"
            assert received["From"].addresses[0].addr_spec == "noreply@refstd.example"
            assert received["Date"].datetime.tzinfo is not None
            assert received["Auto-Submitted"] == "auto-generated"

        # Chinese subject and names travel RFC 2047-encoded and decode back unchanged.
        assert chinese["Subject"] == "3 台计量器具将于 2026-12-15 前到期检定"
        assert english["Subject"] == "3 instruments due for verification by 2026-12-15"
        raw_headers = mailbox.messages[0]["raw"].split(b"\r\n\r\n", 1)[0]
        assert raw_headers.isascii() and b"=?utf-8?" in raw_headers.lower()
        assert chinese["Content-Language"] == "zh-CN" and english["Content-Language"] == "en"

        for received, locale_word in ((chinese, "剩余 7 天"), (english, "7 days left")):
            assert received.get_content_type() == "multipart/alternative"
            found = parts(received)
            text, html = found["text/plain"][0].get_content(), found["text/html"][0].get_content()
            for item in DUE_SOON["data"]["items"]:
                for value in (item["name"], item["serial_number"], item["regulation"]):
                    assert value in text and value in html
            assert locale_word in text and locale_word in html
            assert "text/calendar" not in found

    def test_a_booking_confirmation_carries_the_invitation(self, smtp_server):
        _, mailbox, port = smtp_server()
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            [outcome] = sender.send([notification(CONFIRMED, "zhang@example.edu", "Prof. Zhang", "en")])
        assert outcome.ok
        message = mailbox.messages[0]["message"]
        assert message.get_content_type() == "multipart/mixed"
        alternative = next(part for part in message.walk() if part.get_content_type() == "multipart/alternative")
        assert [part.get_content_type() for part in alternative.iter_parts()] == [
            "text/plain", "text/html", "text/calendar"]
        calendar_part = list(alternative.iter_parts())[2]
        assert calendar_part.get_param("method") == "REQUEST"
        assert calendar_part.get_content_charset() == "utf-8"
        calendar = Calendar.from_ical(calendar_part.get_content())
        [vevent] = calendar.walk("VEVENT")
        assert str(calendar["method"]) == "REQUEST" and str(vevent["status"]) == "CONFIRMED"
        assert str(vevent["uid"]) == f"{CONFIRMED['data']['id']}@refstd"
        assert int(vevent["sequence"]) == 1
        assert str(vevent["attendee"]) == "mailto:zhang@example.edu"
        assert str(vevent["organizer"]) == "mailto:noreply@refstd.example"
        [attachment] = [part for part in message.iter_attachments()]
        assert attachment.get_filename() == "invite.ics"
        assert Calendar.from_ical(attachment.get_content())["method"] == "REQUEST"
        assert message["Subject"].startswith("Booking confirmed: ")

    def test_a_booking_cancellation_carries_a_cancel(self, smtp_server):
        _, mailbox, port = smtp_server()
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            [outcome] = sender.send([notification(CANCELLED, "zhang@example.edu", "张老师", "zh-CN")])
        assert outcome.ok
        message = mailbox.messages[0]["message"]
        [calendar_part] = parts(message)["text/calendar"]
        assert calendar_part.get_param("method") == "CANCEL"
        [vevent] = Calendar.from_ical(calendar_part.get_content()).walk("VEVENT")
        assert str(vevent["status"]) == "CANCELLED" and int(vevent["sequence"]) == 2
        assert message["Subject"].startswith("预约已取消：")

    def test_the_custodian_of_the_standard_is_asked_to_approve_and_the_subject_is_recorded(self, smtp_server):
        _, mailbox, port = smtp_server()
        requested = EVENTS["refstd.scheduler.booking.requested"]
        custodian = notification(requested, "li.custodian@example.com", "李工")
        requester = notification(requested, "zhang@example.edu", "Prof. Zhang", "en")
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            assert all(o.ok for o in sender.send([custodian, requester]))
        subjects = [m["message"]["Subject"] for m in mailbox.messages]
        assert subjects[0].startswith("待审批：") and subjects[1].startswith("Booking request received")
        assert (custodian.subject, requester.subject) == tuple(subjects)

    def test_the_connection_is_kept_between_batches_and_closed_by_close(self, smtp_server):
        _, mailbox, port = smtp_server()
        sender = EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM)
        sender.send([notification(DUE_SOON, "a@example.com")])
        sender.send([notification(DUE_SOON, "b@example.com")])
        assert len(mailbox.peers) == 1
        sender.close()
        sender.send([notification(DUE_SOON, "c@example.com")])
        sender.close()
        assert len(mailbox.peers) == 2 and len(mailbox.messages) == 3

    def test_an_idle_connection_is_replaced_before_the_next_batch(self, smtp_server):
        _, mailbox, port = smtp_server()
        now = [1000.0]
        sender = EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM, clock=lambda: now[0])
        sender.send([notification(DUE_SOON, "a@example.com")])
        now[0] += 3600
        sender.send([notification(DUE_SOON, "b@example.com")])
        sender.close()
        assert len(mailbox.peers) == 2 and len(mailbox.messages) == 2

    def test_a_connection_lost_between_batches_is_reopened_once(self, smtp_server):
        controller, mailbox, port = smtp_server()
        sender = EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM)
        assert sender.send([notification(DUE_SOON, "a@example.com")])[0].ok
        controller.stop()  # drops the open connection
        _, second, _ = smtp_server(port=port)
        [outcome] = sender.send([notification(DUE_SOON, "b@example.com")])
        sender.close()
        assert outcome.ok, outcome.error
        assert [m["rcpt_tos"] for m in second.messages] == [["b@example.com"]]
        assert sender.connections_opened == 2


class TestRefusals:
    def test_try_later_is_retryable_and_the_retry_is_delivered_once(self, smtp_server):
        mailbox = Mailbox()
        mailbox.refuse["wang@example.com"] = ["451 4.3.0 try later"]
        _, mailbox, port = smtp_server(mailbox)
        pending = notification(DUE_SOON, "wang@example.com", "王工")
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            [first] = sender.send([pending])
            assert not first.ok and first.retryable and first.status_code == 451
            assert "451" in first.error and "try later" in first.error
            assert mailbox.messages == []
            [second] = sender.send([pending])
        assert second.ok
        assert len(mailbox.messages) == 1
        assert mailbox.messages[0]["message"]["Message-ID"] == f"<{pending.id}@refstd>"

    def test_no_such_user_is_not_retryable_and_the_rest_of_the_batch_is_sent(self, smtp_server):
        mailbox = Mailbox()
        mailbox.refuse["ghost@example.com"] = ["550 5.1.1 no such user"]
        _, mailbox, port = smtp_server(mailbox)
        batch = [notification(DUE_SOON, "ghost@example.com"), notification(DUE_SOON, "wang@example.com"),
                 notification(CONFIRMED, "zhang@example.edu")]
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            outcomes = sender.send(batch)
        refused, *delivered = outcomes
        assert not refused.ok and refused.retryable is False and refused.status_code == 550
        assert "no such user" in refused.error
        assert all(outcome.ok for outcome in delivered)
        assert [m["rcpt_tos"] for m in mailbox.messages] == [["wang@example.com"], ["zhang@example.edu"]]
        assert len(mailbox.peers) == 1

    def test_a_notification_that_cannot_be_built_fails_alone(self, smtp_server):
        _, mailbox, port = smtp_server()
        unknown = dict(DUE_SOON, type="refstd.inventory.instrument.registered")
        batch = [notification(unknown, "wang@example.com"), notification(DUE_SOON, "not an address"),
                 notification(DUE_SOON, "wang@example.com")]
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            outcomes = sender.send(batch)
        assert [(o.ok, o.retryable) for o in outcomes] == [(False, False), (False, False), (True, True)]
        assert "cannot build the email" in outcomes[0].error
        assert len(mailbox.messages) == 1

    def test_an_unreachable_server_is_retryable_for_the_whole_batch(self):
        port = free_port()  # nothing listens there
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            outcomes = sender.send([notification(DUE_SOON, "a@example.com"), notification(DUE_SOON, "b@example.com")])
        assert all(not o.ok and o.retryable for o in outcomes)
        assert "connection" in outcomes[0].error.lower()

    def test_a_server_that_does_not_answer_times_out(self):
        with socket.socket() as silent:  # accepts connections (backlog) but never greets
            silent.bind(("127.0.0.1", 0))
            silent.listen(5)
            port = silent.getsockname()[1]
            started = dt.datetime.now()
            with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM, timeout=0.5) as sender:
                [outcome] = sender.send([notification(DUE_SOON, "a@example.com")])
            elapsed = (dt.datetime.now() - started).total_seconds()
        assert not outcome.ok and outcome.retryable
        assert "timeout" in outcome.error.lower() or "timed out" in outcome.error.lower()
        assert elapsed < 5


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"mailer" and auth_data.password == b"s3cr@t"
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself


def _tls_files(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class TestAuthAndTls:
    def test_logs_in_with_the_credentials_of_the_url(self, smtp_server):
        _, mailbox, port = smtp_server(authenticator=_authenticator, auth_required=True, auth_require_tls=False)
        # The password is percent-encoded in the URL ("@" -> %40).
        with EmailSender(f"smtp://mailer:s3cr%40t@127.0.0.1:{port}", MAIL_FROM) as sender:
            outcomes = sender.send([notification(DUE_SOON, "a@example.com"), notification(DUE_SOON, "b@example.com")])
        assert all(o.ok for o in outcomes), outcomes
        assert len(mailbox.messages) == 2 and all(m["authenticated"] for m in mailbox.messages)
        assert len(mailbox.peers) == 1

    def test_wrong_credentials_fail_retryably_without_sending(self, smtp_server):
        _, mailbox, port = smtp_server(authenticator=_authenticator, auth_required=True, auth_require_tls=False)
        with EmailSender(f"smtp://mailer:wrong@127.0.0.1:{port}", MAIL_FROM) as sender:
            outcomes = sender.send([notification(DUE_SOON, "a@example.com"), notification(DUE_SOON, "b@example.com")])
        assert all(not o.ok and o.retryable for o in outcomes)
        assert "authentication" in outcomes[0].error.lower() and outcomes[0].status_code == 535
        assert mailbox.messages == []

    def test_without_credentials_a_server_requiring_auth_refuses(self, smtp_server):
        _, mailbox, port = smtp_server(authenticator=_authenticator, auth_required=True, auth_require_tls=False)
        with EmailSender(f"smtp://127.0.0.1:{port}", MAIL_FROM) as sender:
            [outcome] = sender.send([notification(DUE_SOON, "a@example.com")])
        assert not outcome.ok and outcome.status_code == 530 and mailbox.messages == []

    def test_starttls_then_login(self, smtp_server, tmp_path):
        cert_file, key_file = _tls_files(tmp_path)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_file, key_file)
        _, mailbox, port = smtp_server(tls_context=server_context, require_starttls=True,
                                       authenticator=_authenticator, auth_required=True)
        client_context = ssl.create_default_context(cafile=str(cert_file))
        url = f"smtp://mailer:s3cr%40t@localhost:{port}?starttls=true"
        with EmailSender(url, MAIL_FROM, ssl_context=client_context) as sender:
            outcomes = sender.send([notification(DUE_SOON, "a@example.com"), notification(CONFIRMED, "b@example.com")])
        assert all(o.ok for o in outcomes), outcomes
        assert all(m["tls"] and m["authenticated"] for m in mailbox.messages) and len(mailbox.messages) == 2
        assert len(mailbox.peers) == 1

    def test_implicit_tls_with_smtps(self, smtp_server, tmp_path):
        cert_file, key_file = _tls_files(tmp_path)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_file, key_file)
        # aiosmtpd only counts STARTTLS as TLS for AUTH; the connection is TLS from its first byte here.
        _, mailbox, port = smtp_server(ssl_context=server_context, authenticator=_authenticator, auth_required=True,
                                       auth_require_tls=False)
        client_context = ssl.create_default_context(cafile=str(cert_file))
        with EmailSender(f"smtps://mailer:s3cr%40t@localhost:{port}", MAIL_FROM, ssl_context=client_context) as sender:
            [outcome] = sender.send([notification(DUE_SOON, "a@example.com")])
        assert outcome.ok, outcome.error
        assert mailbox.messages[0]["authenticated"]
        # The server speaks TLS only: a plain client does not get through.
        with EmailSender(f"smtp://localhost:{port}", MAIL_FROM, timeout=2) as plain:
            [refused] = plain.send([notification(DUE_SOON, "b@example.com")])
        assert not refused.ok and refused.retryable and len(mailbox.messages) == 1

    def test_starttls_with_an_untrusted_certificate_fails_retryably(self, smtp_server, tmp_path):
        cert_file, key_file = _tls_files(tmp_path)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_file, key_file)
        _, mailbox, port = smtp_server(tls_context=server_context, require_starttls=True)
        with EmailSender(f"smtp://localhost:{port}?starttls=true", MAIL_FROM) as sender:
            [outcome] = sender.send([notification(DUE_SOON, "a@example.com")])
        assert not outcome.ok and outcome.retryable and "certificate" in outcome.error.lower()
        assert mailbox.messages == []


class TestFileTransport:
    def test_writes_one_readable_eml_per_notification(self, tmp_path):
        outbox = tmp_path / "mail"
        batch = [notification(DUE_SOON, "wang@example.com", "王工"),
                 notification(CONFIRMED, "zhang@example.edu", "Prof. Zhang", "en")]
        with EmailSender(outbox.as_uri(), MAIL_FROM) as sender:
            outcomes = sender.send(batch)
        assert all(o.ok for o in outcomes)
        assert sorted(p.name for p in outbox.iterdir()) == sorted(f"{n.id}.eml" for n in batch)
        first = email.message_from_bytes((outbox / f"{batch[0].id}.eml").read_bytes(), policy=policy.default)
        assert first["Subject"] == "3 台计量器具将于 2026-12-15 前到期检定"
        assert first["Message-ID"] == f"<{batch[0].id}@refstd>"
        assert first["To"].addresses[0].addr_spec == "wang@example.com"
        assert "一般压力表（示例）" in parts(first)["text/plain"][0].get_content()
        second = email.message_from_bytes((outbox / f"{batch[1].id}.eml").read_bytes(), policy=policy.default)
        assert parts(second)["text/calendar"][0].get_param("method") == "REQUEST"

    def test_a_resend_overwrites_the_same_file(self, tmp_path):
        outbox = tmp_path / "mail"
        pending = notification(DUE_SOON, "wang@example.com", "王工")
        with EmailSender(outbox.as_uri(), MAIL_FROM) as sender:
            assert sender.send([pending])[0].ok
            pending.locale = "en"  # something visible changes between the two sends
            assert sender.send([pending])[0].ok
        assert [p.name for p in outbox.iterdir()] == [f"{pending.id}.eml"]
        written = email.message_from_bytes((outbox / f"{pending.id}.eml").read_bytes(), policy=policy.default)
        assert written["Subject"] == "3 instruments due for verification by 2026-12-15"

    def test_an_unwritable_directory_is_retryable(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        with EmailSender((blocker / "mail").as_uri(), MAIL_FROM) as sender:
            [outcome] = sender.send([notification(DUE_SOON, "wang@example.com")])
        assert not outcome.ok and outcome.retryable


class TestConfiguration:
    def test_default_is_a_mail_directory_under_var(self, monkeypatch):
        from shared.config import VAR_DIR

        monkeypatch.delenv("MAIL_URL", raising=False)
        monkeypatch.delenv("MAIL_FROM", raising=False)
        assert configured_mail_url() == Path(VAR_DIR, "mail").resolve().as_uri()
        assert configured_mail_from() == DEFAULT_MAIL_FROM == "refstd 计量院通知 <noreply@refstd.example>"
        sender = EmailSender()
        assert sender.config.scheme == "file" and sender.config.directory == Path(VAR_DIR, "mail").resolve()

    def test_environment_and_settings_attributes(self, monkeypatch):
        monkeypatch.setenv("MAIL_URL", "smtp://mail.example:2525")
        monkeypatch.setenv("MAIL_FROM", "Desk <desk@example.org>")

        class Settings:
            pass

        sender = EmailSender.from_settings(Settings())
        assert (sender.config.host, sender.config.port, sender.envelope_from) == ("mail.example", 2525,
                                                                                  "desk@example.org")
        settings = Settings()
        settings.mail_url, settings.mail_from = "file:///tmp/x", "Other <other@example.org>"
        sender = EmailSender.from_settings(settings)
        assert sender.config.directory == Path("/tmp/x") and sender.envelope_from == "other@example.org"

    def test_the_services_settings(self, monkeypatch):
        from shared.config import Settings

        monkeypatch.setenv("MAIL_URL", "smtp://relay.example:587?starttls=true")
        monkeypatch.setenv("MAIL_FROM", "计量院 <notice@institute.example>")
        sender = EmailSender.from_settings(Settings("notifier"))
        assert (sender.config.host, sender.config.port, sender.config.starttls) == ("relay.example", 587, True)
        assert sender.envelope_from == "notice@institute.example"

    @pytest.mark.parametrize("url, expected", [
        ("smtp://localhost:1025", ("smtp", "localhost", 1025, None, None, False)),
        ("smtp://mail.example", ("smtp", "mail.example", 25, None, None, False)),
        ("smtp://u%40x:p%3Aw@mail.example:587?starttls=true", ("smtp", "mail.example", 587, "u@x", "p:w", True)),
        ("smtp://mail.example:587?starttls=1", ("smtp", "mail.example", 587, None, None, True)),
        ("smtps://u:p@mail.example", ("smtps", "mail.example", 465, "u", "p", False)),
    ])
    def test_parses_smtp_urls(self, url, expected):
        config = parse_mail_url(url)
        assert (config.scheme, config.host, config.port, config.username, config.password,
                config.starttls) == expected
        assert "p:w" not in repr(config)

    def test_parses_file_urls(self):
        assert parse_mail_url("file:///var/spool/refstd").directory == Path("/var/spool/refstd")
        assert parse_mail_url("file://localhost/tmp/m").directory == Path("/tmp/m")
        assert parse_mail_url("file://var/mail").directory == Path("var/mail")

    @pytest.mark.parametrize("url", ["http://mail.example", "smtp://mail.example:notaport", "file://",
                                     "smtps://mail.example?starttls=true"])
    def test_refuses_what_it_cannot_deliver_through(self, url):
        with pytest.raises(ValueError):
            parse_mail_url(url)

    def test_a_bad_mail_from_fails_at_start(self):
        with pytest.raises(ValueError):
            EmailSender("file:///tmp/x", "no address here")
