"""The webhook sender against a real HTTP receiver on 127.0.0.1 that verifies every signature with the
Standard Webhooks library: outcomes for each kind of answer, retries with the same webhook-id, time
limits, parallel deliveries, and the SSRF guard at delivery time."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from services.notifier.delivery import Dispatcher
from services.notifier.models import Notification, WebhookEndpoint
from services.notifier.webhook_sender import WebhookSender
from services.notifier.webhooks import new_secret
from shared.config import Settings
from tests.unit.notifier.samples import all_events

BOOKING = "refstd.scheduler.booking.confirmed"


class Receiver:
    """An HTTP server in a thread. ``script(path, *answers)``: what it answers on a path, in turn
    (the last answer repeats); an answer is a status, or a dict with status, body, headers, delay,
    drip (send the answer one byte at a time, this many seconds apart)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        self.server_names: list[str | None] = []
        self.secrets: dict[str, str] = {}
        self.answers: dict[str, list] = {}
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server protocol
                received = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                headers = {k: v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secrets[path]).verify(body, headers)
                    verified = True
                except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
                    verified = repr(exc)
                receiver.requests.append({"path": self.path, "headers": headers, "body": body,
                                          "verified": verified, "at": received})
                answers = receiver.answers.get(path, [200])
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                answer = answer if isinstance(answer, dict) else {"status": answer}
                if receiver.stop.wait(answer.get("delay", 0)):
                    return
                raw = (f"HTTP/1.0 {answer['status']} X\r\n"
                       + "".join(f"{k}: {v}\r\n" for k, v in answer.get("headers", {}).items())
                       + "\r\n").encode() + answer.get("body", b"")
                try:
                    if "drip" in answer:
                        for byte in raw:
                            if receiver.stop.wait(answer["drip"]):
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    else:
                        self.wfile.write(raw)
                except OSError:
                    pass  # the sender gave up: that is what some tests want

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers) -> None:
        self.answers[path] = list(answers)

    def hits(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"].split("?")[0] == path]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def sender(notifier_db):
    made: list[WebhookSender] = []

    def make(allow_private: bool = True, timeout=(2.0, 2.0)) -> WebhookSender:
        made.append(WebhookSender(notifier_db, allow_private=allow_private, timeout=timeout))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def endpoint(notifier_db, receiver):
    """``endpoint(path)`` -> a registered endpoint whose secret the receiver knows for that path."""

    def make(path: str = "/hook", *, url: str | None = None, active: bool = True) -> WebhookEndpoint:
        row = WebhookEndpoint(organization_id=None, url=url or receiver.url(path), event_types=["refstd.#"],
                              secret=new_secret(), active=active, created_by="test")
        receiver.secrets[path] = row.secret
        with notifier_db.transaction() as session:
            session.add(row)
        return row

    return make


@pytest.fixture
def notification(notifier_db):
    """``notification(endpoint)`` -> a pending notification of a sample booking event to that endpoint."""

    def make(target: WebhookEndpoint, event: dict | None = None) -> Notification:
        event = event or all_events()[BOOKING]
        row = Notification(event_id=event["id"], event_type=event["type"], event=event, channel="webhook",
                           recipient=target.id, endpoint_id=target.id, status="pending", attempts=0)
        with notifier_db.transaction() as session:
            session.add(row)
        return row

    return make


class TestDelivering:
    def test_a_notification_is_posted_as_the_signed_cloudevent(self, receiver, sender, endpoint, notification):
        target = endpoint("/hook")
        sent = notification(target)

        [outcome] = sender().send([sent])

        assert outcome.ok, outcome
        assert outcome.status_code == 200
        assert outcome.duration_ms is not None
        [request] = receiver.hits("/hook")
        assert request["verified"] is True
        assert json.loads(request["body"]) == sent.event  # the CloudEvent itself, Chinese text intact
        assert "质子交换膜" in request["body"].decode("utf-8")
        headers = request["headers"]
        assert headers["webhook-id"] == sent.event["id"]
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        assert headers["webhook-signature"].startswith("v1,")
        assert headers["Content-Type"].startswith("application/cloudevents+json")
        assert headers["User-Agent"] == "refstd-webhooks/1"
        assert headers["Host"] == f"127.0.0.1:{receiver.port}"

    def test_a_query_string_in_the_url_is_kept(self, receiver, sender, endpoint, notification):
        target = endpoint("/hook", url=receiver.url("/hook?tenant=7"))
        assert sender().send([notification(target)])[0].ok
        assert receiver.hits("/hook")[0]["path"] == "/hook?tenant=7"

    def test_a_receiver_failing_then_accepting_gets_the_same_webhook_id_both_times(
            self, receiver, sender, endpoint, notification):
        receiver.script("/flaky", {"status": 500, "body": b"database is down"}, 200)
        sent = notification(endpoint("/flaky"))
        webhooks = sender()

        [first] = webhooks.send([sent])
        [second] = webhooks.send([sent])

        assert not first.ok and first.retryable
        assert first.status_code == 500
        assert first.error == "HTTP 500: database is down"
        assert second.ok and second.status_code == 200
        attempts = receiver.hits("/flaky")
        assert [a["verified"] for a in attempts] == [True, True]
        assert attempts[0]["headers"]["webhook-id"] == attempts[1]["headers"]["webhook-id"] == sent.event["id"]

    @pytest.mark.parametrize("status", [400, 404, 429, 503])
    def test_any_other_status_is_a_retryable_failure(self, receiver, sender, endpoint, notification, status):
        receiver.script("/hook", status)
        [outcome] = sender().send([notification(endpoint("/hook"))])
        assert (outcome.ok, outcome.retryable, outcome.status_code) == (False, True, status)

    def test_410_gone_is_a_permanent_failure(self, receiver, sender, endpoint, notification):
        receiver.script("/gone", 410)
        [outcome] = sender().send([notification(endpoint("/gone"))])
        assert (outcome.ok, outcome.retryable, outcome.status_code) == (False, False, 410)

    def test_a_long_error_body_is_cut_short(self, receiver, sender, endpoint, notification):
        receiver.script("/hook", {"status": 502, "body": b"<html>" + b"x" * 20000})
        [outcome] = sender().send([notification(endpoint("/hook"))])
        assert outcome.error.startswith("HTTP 502: <html>xxx")
        assert len(outcome.error) <= 300

    def test_a_redirect_is_not_followed(self, receiver, sender, endpoint, notification):
        receiver.secrets["/elsewhere"] = "unused"
        receiver.script("/moved", {"status": 302, "headers": {"Location": receiver.url("/elsewhere")}})
        [outcome] = sender().send([notification(endpoint("/moved"))])
        assert not outcome.ok and outcome.retryable
        assert outcome.status_code == 302
        assert "redirects are not followed" in outcome.error
        assert len(receiver.hits("/moved")) == 1
        assert receiver.hits("/elsewhere") == []

    def test_a_refused_connection_is_a_retryable_failure(self, sender, endpoint, notification):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        target = endpoint("/hook", url=f"http://127.0.0.1:{closed_port}/hook")
        [outcome] = sender().send([notification(target)])
        assert not outcome.ok and outcome.retryable
        assert "connection failed" in outcome.error

    def test_outcomes_come_back_in_the_order_of_the_notifications(self, receiver, sender, endpoint,
                                                                  notification):
        receiver.script("/bad", 500)
        batch = [notification(endpoint(path)) for path in ("/good", "/bad", "/good2")]
        outcomes = sender().send(batch)
        assert [o.ok for o in outcomes] == [True, False, True]

    def test_an_empty_batch_sends_nothing(self, receiver, sender):
        assert sender().send([]) == []
        assert receiver.requests == []


class TestTimeLimits:
    def test_a_slow_receiver_times_out_and_does_not_hold_back_another_in_the_same_batch(
            self, receiver, sender, endpoint, notification):
        receiver.script("/slow", {"status": 200, "delay": 6})
        slow = notification(endpoint("/slow"))
        fast = notification(endpoint("/fast"))  # after the slow one in the batch
        webhooks = sender(timeout=(1.0, 1.0))

        started = time.monotonic()
        slow_outcome, fast_outcome = webhooks.send([slow, fast])
        elapsed = time.monotonic() - started

        assert fast_outcome.ok
        assert receiver.hits("/fast")[0]["at"] - started < 0.9  # not queued behind the slow receiver
        assert not slow_outcome.ok and slow_outcome.retryable
        assert "timed out" in slow_outcome.error
        assert 0.9 < elapsed < 2.5  # the read timeout, not the receiver's 6 s

    def test_a_receiver_trickling_its_answer_is_cut_off_at_the_read_timeout(
            self, receiver, sender, endpoint, notification):
        receiver.script("/drip", {"status": 200, "drip": 0.1})  # each byte well within the timeout
        webhooks = sender(timeout=(1.0, 1.0))

        started = time.monotonic()
        [outcome] = webhooks.send([notification(endpoint("/drip"))])

        assert not outcome.ok and outcome.retryable
        assert "timed out" in outcome.error
        assert time.monotonic() - started < 2.5


class TestRefusedDeliveries:
    def test_a_deleted_endpoint_is_a_permanent_failure(self, receiver, sender, endpoint, notification):
        [outcome] = sender().send([notification(endpoint("/hook", active=False))])
        assert (outcome.ok, outcome.retryable, outcome.error) == (False, False, "endpoint deleted")
        assert receiver.requests == []

    def test_an_unknown_endpoint_is_a_permanent_failure(self, sender):
        event = all_events()[BOOKING]
        orphan = Notification(id="n-1", event_id=event["id"], event_type=event["type"], event=event,
                              channel="webhook", recipient="5f0c7d7e-0000-4000-8000-000000000000",
                              endpoint_id=None)
        [outcome] = sender().send([orphan])
        assert (outcome.ok, outcome.retryable, outcome.error) == (False, False, "endpoint deleted")

    def test_a_private_address_is_refused_at_delivery_unless_allowed(self, receiver, sender, endpoint,
                                                                     notification):
        sent = notification(endpoint("/hook"))  # registered while private addresses were allowed

        [outcome] = sender(allow_private=False).send([sent])

        assert not outcome.ok and not outcome.retryable
        assert "loopback" in outcome.error and "refused at delivery" in outcome.error
        assert receiver.requests == []

    def test_a_host_name_now_resolving_to_a_private_address_is_refused(self, receiver, sender, endpoint,
                                                                       notification, partner_dns):
        # DNS changed since registration: the name now resolves to 127.0.0.1
        sent = notification(endpoint("/hook", url=f"http://receiver.partner.test:{receiver.port}/hook"))

        [outcome] = sender(allow_private=False).send([sent])

        assert not outcome.ok and not outcome.retryable
        assert "receiver.partner.test resolves to 127.0.0.1" in outcome.error
        assert receiver.requests == []

    def test_the_connection_goes_to_the_checked_address_with_the_host_name_in_the_host_header(
            self, receiver, sender, endpoint, notification, partner_dns):
        # the name is known to the guard only (the system cannot resolve it): delivering proves the
        # connection went to the address the guard checked
        sent = notification(endpoint("/hook", url=f"http://receiver.partner.test:{receiver.port}/hook"))

        [outcome] = sender(allow_private=True).send([sent])

        assert outcome.ok, outcome
        assert partner_dns == ["receiver.partner.test"]  # resolved once, by the check
        [request] = receiver.requests
        assert request["headers"]["Host"] == f"receiver.partner.test:{receiver.port}"
        assert request["verified"] is True

    def test_an_unresolvable_host_is_a_retryable_failure(self, sender, endpoint, notification, monkeypatch):
        def resolve(*args, **kwargs):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        sent = notification(endpoint("/hook", url="https://receiver.partner.test/hook"))
        [outcome] = sender().send([sent])
        assert not outcome.ok and outcome.retryable
        assert "could not be resolved" in outcome.error


def _certificate(subject: str, key, issuer: x509.Name | None = None, issuer_key=None, ca: bool = False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture
def tls(tmp_path):
    """A private CA, and a server context holding its certificate for receiver.partner.test."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("refstd test CA", ca_key, ca=True)
    leaf = _certificate("receiver.partner.test", leaf_key, issuer=ca.subject, issuer_key=ca_key)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    return server, ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))


@pytest.fixture
def tls_receiver(tls):
    server = Receiver(tls[0])
    yield server
    server.close()


@pytest.fixture
def partner_dns(monkeypatch):
    """*.partner.test resolves to 127.0.0.1 for the guard; the system resolver knows no such names."""
    real, lookups = socket.getaddrinfo, []

    def resolve(host, port, *args, **kwargs):
        if str(host).endswith(".partner.test"):
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return lookups


class TestHttps:
    def test_tls_names_and_verifies_the_url_host_while_connecting_to_the_checked_address(
            self, tls, tls_receiver, notifier_db, partner_dns):
        target = WebhookEndpoint(url=f"https://receiver.partner.test:{tls_receiver.port}/hook",
                                 event_types=["refstd.#"], secret=new_secret(), created_by="test")
        tls_receiver.secrets["/hook"] = target.secret
        with notifier_db.transaction() as session:
            session.add(target)
        event = all_events()[BOOKING]
        sent = Notification(event_id=event["id"], event_type=event["type"], event=event, channel="webhook",
                            recipient=target.id, endpoint_id=target.id)
        webhooks = WebhookSender(notifier_db, allow_private=True, timeout=(2.0, 2.0), tls_context=tls[1])
        try:
            [outcome] = webhooks.send([sent])
        finally:
            webhooks.close()

        assert outcome.ok, outcome
        assert tls_receiver.server_names == ["receiver.partner.test"]  # SNI
        [request] = tls_receiver.requests
        assert request["verified"] is True
        assert request["headers"]["Host"] == f"receiver.partner.test:{tls_receiver.port}"
        assert partner_dns == ["receiver.partner.test"]

    @pytest.mark.parametrize("host, trusted, words", [
        ("other.partner.test", True, "match"),  # a certificate for another name: hostname mismatch
        ("receiver.partner.test", False, "certificate verify failed"),  # a CA the system does not trust
    ])
    def test_a_certificate_that_does_not_verify_is_a_retryable_failure(
            self, tls, tls_receiver, notifier_db, partner_dns, host, trusted, words):
        target = WebhookEndpoint(url=f"https://{host}:{tls_receiver.port}/hook", event_types=["refstd.#"],
                                 secret=new_secret(), created_by="test")
        with notifier_db.transaction() as session:
            session.add(target)
        event = all_events()[BOOKING]
        sent = Notification(event_id=event["id"], event_type=event["type"], event=event, channel="webhook",
                            recipient=target.id, endpoint_id=target.id)
        webhooks = WebhookSender(notifier_db, allow_private=True, timeout=(2.0, 2.0),
                                 tls_context=tls[1] if trusted else None)
        try:
            [outcome] = webhooks.send([sent])
        finally:
            webhooks.close()

        assert not outcome.ok and outcome.retryable
        assert words in outcome.error
        assert tls_receiver.requests == []


class TestThroughTheDispatcher:
    def test_a_ping_is_delivered_signed_and_a_failing_receiver_gets_it_once_more_with_the_same_id(
            self, app, client, token_for, receiver, notifier_db, monkeypatch):
        monkeypatch.setattr(app.config["REFSTD_SETTINGS"], "webhook_allow_private", True)
        partner = token_for("partner", "7c3e9a12-5b4d-4f8e-a1c6-9d2e4b6f8a01")
        created = client.post("/api/v1/webhooks", headers=partner,
                              json={"url": receiver.url("/ping"), "event_types": ["refstd.scheduler.#"]})
        assert created.status_code == 201, created.get_data(as_text=True)
        receiver.secrets["/ping"] = created.get_json()["secret"]
        receiver.script("/ping", 500, 200)
        ping = client.post(f"/api/v1/webhooks/{created.get_json()['id']}/ping", headers=partner)
        assert ping.status_code == 202
        webhooks = WebhookSender(notifier_db, allow_private=True, timeout=(2.0, 2.0))
        dispatcher = Dispatcher(notifier_db, webhooks, channel="webhook", base_delay=0.0, max_delay=0.0)
        try:
            while dispatcher.run_once() and len(receiver.requests) < 3:
                pass
        finally:
            webhooks.close()

        with notifier_db.Session() as session:
            notification = session.get(Notification, ping.get_json()["notification_id"])
            assert (notification.status, notification.attempts) == ("sent", 2)
            assert [a.status_code for a in notification.attempts_log] == [500, 200]
        first, second = receiver.hits("/ping")
        assert first["verified"] is True and second["verified"] is True
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == notification.event_id
        assert json.loads(second["body"])["type"] == "refstd.notifier.webhook.ping"


class TestConfiguration:
    def test_the_sender_reads_webhook_allow_private_from_the_settings(self, notifier_db, monkeypatch):
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
        allowed = WebhookSender.from_settings(Settings("notifier", database_url=notifier_db.url), notifier_db)
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
        refused = WebhookSender.from_settings(Settings("notifier", database_url=notifier_db.url), notifier_db)
        try:
            assert (allowed.channel, allowed.allow_private, refused.allow_private) == ("webhook", True, False)
            assert (allowed.connect_timeout, allowed.read_timeout) == (3.0, 10.0)
        finally:
            allowed.close()
            refused.close()
