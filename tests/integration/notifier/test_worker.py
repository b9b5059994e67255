"""The notifier's worker end to end with the real RabbitMQ: scheduler events in through ``notifier.events``,
notifications out through the channel senders, its own events out to ``notifier.audit``."""

from __future__ import annotations

import contextlib
import copy
import email
import email.policy
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest
from sqlalchemy import func, select

from services.notifier import worker
from services.notifier.models import KnownOrganization, Notification, OutboxMessage
from services.topology import ALL_QUEUES, NOTIFIER_AUDIT, NOTIFIER_EVENTS
from shared.config import Settings
from shared.messaging.connection import connect
from shared.messaging.envelope import CONTENT_TYPE, encode, make_event
from shared.messaging.topology import EXCHANGE, declare_topology
from shared.messaging.worker import run_components
from tests import support
from tests.integration.notifier.test_delivery import RecordingSender
from tests.integration.notifier.test_routing import organization_payload
from tests.unit.notifier.samples import ENTERPRISE_ID, all_events

S = "refstd.scheduler."


#: A whole worker starts in this process's threads: give it longer than the shared default.
wait_until = functools.partial(support.wait_until, timeout=30.0)


class Broker:
    """The test's own connection: publishes events and reads queues; deletes the queues afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = connect(url, name="notifier-test")
        self.channel = self.connection.channel()

    def publish(self, event_type: str, body: bytes, message_id: str | None) -> None:
        self.channel.basic_publish(
            exchange=EXCHANGE, routing_key=event_type, body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type=CONTENT_TYPE,
                                            message_id=message_id, type=event_type))

    def publish_event(self, event: dict) -> dict:
        self.publish(event["type"], encode(event), event["id"])
        return event

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue=queue, passive=True).method.message_count

    def take(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        got = []
        while True:
            method, properties, body = self.channel.basic_get(queue=queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, body))

    def delete_queues(self) -> None:
        for spec in ALL_QUEUES:
            for name in (spec.name, spec.dlq, *spec.retry_queues):
                with contextlib.suppress(pika.exceptions.AMQPError):
                    if not self.channel.is_open:
                        self.channel = self.connection.channel()
                    self.channel.queue_delete(queue=name)
        self.connection.close()


@pytest.fixture
def broker(amqp_url):
    declare_topology(amqp_url, ALL_QUEUES)
    b = Broker(amqp_url)
    yield b
    b.delete_queues()


class Worker:
    """The worker's components (``services.notifier.worker.components``) run by ``run_components`` in a
    thread, with recording senders for both channels."""

    def __init__(self, amqp_url: str, database) -> None:
        self.settings = Settings("notifier", database_url=database.url)
        self.settings.amqp_url = amqp_url
        self.email = RecordingSender("email")
        self.webhook = RecordingSender("webhook")
        self.components = worker.components(self.settings, database, self.email, self.webhook)
        for component in self.components:
            if hasattr(component, "poll_interval"):
                component.poll_interval = 0.05
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="notifier-worker")

    def _run(self) -> None:
        try:
            run_components(self.components, self.settings.amqp_url, stop=self.stop, install_signal_handlers=False,
                           queues=ALL_QUEUES)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    @property
    def consumer(self):
        return next(c for c in self.components if c.name == "notifier.events")

    def __enter__(self) -> Worker:
        self.thread.start()
        wait_until(self.consumer.ready.is_set, what="the consumer to be ready")
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, self.error


def fresh(name: str) -> dict:
    event = copy.deepcopy(all_events()[S + name])
    return make_event(event["type"], event["source"], event["subject"], event["data"])


def notifications(db) -> list[Notification]:
    with db.Session() as session:
        return list(session.scalars(select(Notification).order_by(Notification.recipient)))


def unsent_outbox(db) -> int:
    with db.Session() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))


def test_a_notice_published_by_the_scheduler_is_sent_to_each_contact_once(amqp_url, broker, notifier_db):
    with Worker(amqp_url, notifier_db) as running:
        event = broker.publish_event(fresh("recalibration.due_soon"))
        broker.publish_event(event)  # the broker redelivers, or the scheduler's relay publishes twice
        wait_until(lambda: len(running.email.sent) >= 2, what="two emails")
        wait_until(lambda: unsent_outbox(notifier_db) == 0 and broker.depth(NOTIFIER_AUDIT.name) >= 2,
                   what="notification.sent relayed to notifier.audit")
        time.sleep(0.5)  # a second send would show up now
    found = notifications(notifier_db)
    assert [(n.recipient, n.locale, n.status, n.attempts) for n in found] == [
        ("anna@example.com", "en", "sent", 1), ("wang@example.com", "zh-CN", "sent", 1)]
    assert sorted(running.email.sent) == sorted(n.id for n in found)
    assert running.webhook.sent == []
    assert running.consumer.processed_count == 1 and running.consumer.duplicate_count == 1
    audit = [json.loads(body) for _props, body in broker.take(NOTIFIER_AUDIT.name)]
    assert sorted(e["subject"] for e in audit) == sorted(n.id for n in found)
    assert {e["type"] for e in audit} == {"refstd.notifier.notification.sent"}
    assert {e["correlationid"] for e in audit} == {event["correlationid"]}


def test_poison_goes_to_the_dlq_and_the_next_event_is_still_sent(amqp_url, broker, notifier_db):
    with Worker(amqp_url, notifier_db) as running:
        broker.publish(S + "booking.confirmed", b"{not json", "poison-1")
        bad = fresh("recalibration.overdue")
        del bad["data"]["recipient"]
        broker.publish_event(bad)
        good = broker.publish_event(fresh("booking.confirmed"))
        wait_until(lambda: len(running.email.sent) >= 1, what="the good event's email")
        wait_until(lambda: broker.depth(NOTIFIER_EVENTS.dlq) == 2, what="two messages in the DLQ")
    dead = broker.take(NOTIFIER_EVENTS.dlq)
    assert {props.message_id for props, _body in dead} == {"poison-1", bad["id"]}
    assert all(props.headers["x-refstd-reason"] == "invalid" for props, _body in dead)
    [sent] = notifications(notifier_db)
    assert (sent.event_id, sent.recipient, sent.status) == (good["id"], "zhang@example.edu", "sent")


def test_an_organization_registered_in_the_inventory_joins_the_read_model(amqp_url, broker, notifier_db):
    contacts = [{"name": "周工", "email": "zhou@example.com", "phone": None, "locale": "en"}]
    event = make_event("refstd.inventory.organization.registered", "/services/inventory", ENTERPRISE_ID,
                       organization_payload(ENTERPRISE_ID, 1, contacts))
    with Worker(amqp_url, notifier_db):
        broker.publish_event(event)

        def known():
            with notifier_db.Session() as session:
                return session.get(KnownOrganization, ENTERPRISE_ID)

        organization = wait_until(known, what="the organization in the read model")
    assert organization.contacts == contacts and organization.source_version == 1


def test_a_webhook_receiver_failing_does_not_hold_back_email(amqp_url, broker, notifier_db):
    from tests.integration.notifier.test_routing import add_endpoint

    add_endpoint(notifier_db, None, "#")
    with Worker(amqp_url, notifier_db) as running:
        gate = threading.Event()

        def stuck(notification):
            gate.wait(20)  # a receiver that hangs
            return running.webhook.script_default(notification)

        running.webhook.script_default = RecordingSender().script
        running.webhook.script = stuck
        broker.publish_event(fresh("booking.requested"))
        wait_until(lambda: len(running.email.sent) >= 2, timeout=15, what="both emails while the webhook hangs")
        assert running.webhook.sent == []
        gate.set()
        wait_until(lambda: len(running.webhook.sent) == 1, what="the webhook once the receiver answers")
    assert {n.status for n in notifications(notifier_db)} == {"sent"}


class Mailbox:
    """A real SMTP server (aiosmtpd) on a free local port, keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                mailbox.messages.append((list(envelope.rcpt_tos), message))
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Mailbox:
        self.controller.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.controller.stop()


def test_the_worker_process_mails_a_notice_through_smtp_and_stops_cleanly_on_sigterm(amqp_url, broker, notifier_db,
                                                                                     tmp_path):
    root = Path(__file__).resolve().parents[3]
    with Mailbox() as mailbox:
        env = {**os.environ, "PYTHONPATH": str(root), "AMQP_URL": amqp_url, "NOTIFIER_DATABASE_URL": notifier_db.url,
               "MAIL_URL": f"smtp://127.0.0.1:{mailbox.port}", "MAIL_FROM": "refstd <noreply@refstd.example>",
               "REFSTD_VAR_DIR": str(tmp_path)}
        process = subprocess.Popen([sys.executable, "-m", "services.notifier.worker"], cwd=root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            event = broker.publish_event(fresh("recalibration.due_soon"))
            wait_until(lambda: len(mailbox.messages) >= 2 or process.poll() is not None, timeout=60,
                       what="two emails")
            assert process.poll() is None, process.communicate()[1][-3000:]
            wait_until(lambda: {n.status for n in notifications(notifier_db)} == {"sent"}, what="marked sent")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                _out, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert process.returncode == 0, err[-3000:]
    received = {rcpt[0]: message for rcpt, message in mailbox.messages}
    assert received.keys() == {"wang@example.com", "anna@example.com"}
    by_recipient = {n.recipient: n for n in notifications(notifier_db)}
    for address, message in received.items():
        assert message["Subject"] == by_recipient[address].subject
        assert by_recipient[address].id in message["Message-ID"]
    assert all(n.event_id == event["id"] for n in by_recipient.values())
