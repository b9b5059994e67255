"""Notifier throughput against raw consuming of the same queue, measured in the same run.

    .venv/bin/python -m bench.notifier_throughput [--events 10000] [--database-url URL]

Creates a fresh RabbitMQ vhost (``rabbitmqctl``) with the system's topology, fills ``notifier.events``
with N notice events (one recipient each; published with confirms), then measures:

(a) raw: a pika ``BlockingChannel`` consuming the queue and acknowledging each message (prefetch as the
    notifier's consumer), no database;
(b) email: the notifier worker's components (relay, consumer, email and webhook dispatchers, as
    ``services.notifier.worker.components`` builds them) on a fresh database, from start until every
    notice's email was accepted by a local SMTP sink (aiosmtpd, in this process) and marked sent;
(c) webhook: the same with events whose recipient has no contacts and one admin webhook endpoint, until
    every delivery was answered 204 by a local HTTP sink (``http.server`` in a thread) and marked sent.

For (b) and (c) it also reports when the consumer had recorded every notification (events ->
notification rows), the first half of the work. The sinks run in this process and take CPU from it.
Prints a Markdown table; the vhost and the databases are deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid

import pika
from sqlalchemy import func, select

from bench.support import RABBITMQ, fresh_database, fresh_vhost
from services.notifier.manage import prepare_database
from services.notifier.models import Notification, WebhookEndpoint
from services.scheduler import events as scheduler_events
from services.topology import ALL_QUEUES, NOTIFIER_EVENTS
from shared.config import Settings
from shared.db import Database
from shared.messaging.connection import connect
from shared.messaging.envelope import CONTENT_TYPE, encode, make_event
from shared.messaging.topology import EXCHANGE, declare_topology
from shared.messaging.worker import run_components

EVENT_TYPE = scheduler_events.PREFIX + "recalibration.due_soon"


# -- the events --------------------------------------------------------------------------------------

def notice_events(count: int, *, with_contact: bool) -> list[dict]:
    """N notices, each to one organization with (or without) one contact, listing one instrument."""
    as_of = dt.date(2026, 12, 8)
    schema = scheduler_events.PAYLOADS["recalibration.due_soon"]()
    result = []
    for i in range(count):
        organization_id = str(uuid.uuid4())
        contacts = [{"name": f"联系人{i}", "email": f"contact{i}@bench.example", "phone": None,
                     "locale": "en" if i % 2 else "zh-CN"}] if with_contact else []
        data = {
            "notice": "due_soon", "as_of": as_of, "organization_id": organization_id,
            "recipient": {"kind": "organization", "organization_id": organization_id, "name": f"示例企业{i}",
                          "name_en": f"Sample Co. {i}", "contacts": contacts},
            "items": [{"item_kind": "instrument", "item_id": str(uuid.uuid4()), "name": "一般压力表",
                       "serial_number": f"P-{i:06d}", "category": "pressure gauge", "regulation": "JJG 52-2013",
                       "mandatory": True, "standard_id": None, "standard_name": None,
                       "due_on": as_of + dt.timedelta(days=7), "days_left": 7, "lead": "7"}],
            "earliest_due_on": as_of + dt.timedelta(days=7),
            "next_steps": "请联系计量院预约检定：0533-0000000（示例）",
        }
        result.append(make_event(EVENT_TYPE, scheduler_events.SOURCE, organization_id, schema.dump(data)))
    return result


def fill_queue(amqp_url: str, events: list[dict]) -> None:
    """Publish every event to the exchange with confirms; they land in notifier.events."""
    connection = connect(amqp_url, name="bench-fill")
    channel = connection.channel()
    channel.confirm_delivery()
    for event in events:
        channel.basic_publish(
            exchange=EXCHANGE, routing_key=event["type"], body=encode(event), mandatory=True,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type=CONTENT_TYPE,
                                            message_id=event["id"], type=event["type"]))
    depth = channel.queue_declare(queue=NOTIFIER_EVENTS.name, passive=True).method.message_count
    connection.close()
    if depth != len(events):
        raise SystemExit(f"{NOTIFIER_EVENTS.name} holds {depth} messages, expected {len(events)}")


# -- (a) raw -----------------------------------------------------------------------------------------

def measure_raw(amqp_url: str, count: int) -> float:
    started = time.perf_counter()
    connection = connect(amqp_url, name="bench-raw")
    channel = connection.channel()
    channel.basic_qos(prefetch_count=NOTIFIER_EVENTS.prefetch)
    consumed = 0

    def on_message(ch, method, _properties, _body) -> None:
        nonlocal consumed
        ch.basic_ack(delivery_tag=method.delivery_tag)
        consumed += 1

    channel.basic_consume(queue=NOTIFIER_EVENTS.name, on_message_callback=on_message)
    while consumed < count:
        connection.process_data_events(time_limit=1)
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


# -- the sinks ---------------------------------------------------------------------------------------

class SmtpSink:
    """aiosmtpd accepting every message (counted, discarded)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received = 0
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
                sink.received += 1
                return "250 OK"

        with socket.socket() as probe:  # aiosmtpd needs a port number it can connect to itself
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.controller.stop()


class WebhookSink:
    """An HTTP server answering 204 to every POST (counted)."""

    def __init__(self) -> None:
        sink = self
        self.received = 0
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's hook name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink._lock:
                    sink.received += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 drops concurrent connects: SYN retried after 1 s

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/refstd"
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- (b), (c) the notifier ---------------------------------------------------------------------------

def counts(db: Database) -> tuple[int, int]:
    """(notifications recorded, notifications sent)."""
    with db.Session() as session:
        recorded = session.scalar(select(func.count()).select_from(Notification))
        sent = session.scalar(select(func.count()).select_from(Notification).where(Notification.status == "sent"))
    return recorded, sent


def measure_notifier(amqp_url: str, database_url: str, count: int, *, mail_url: str | None,
                     endpoint_url: str | None, timeout: float) -> tuple[float, float]:
    """Run the worker until every notification is sent; returns (seconds to record all, seconds to send all)."""
    from services.notifier import worker
    from services.notifier.mail import EmailSender
    from services.notifier.webhook_sender import WebhookSender

    db = Database(database_url)
    prepare_database(db)
    if endpoint_url:
        with db.transaction() as session:
            session.add(WebhookEndpoint(organization_id=None, url=endpoint_url, event_types=["refstd.scheduler.#"],
                                        secret="whsec_" + "YmVuY2htYXJrLXNlY3JldC0zMi1ieXRlcyEhISEhIQ==",
                                        created_by="bench"))
    settings = Settings("notifier", database_url=database_url)
    settings.amqp_url = amqp_url
    settings.webhook_allow_private = True  # the sink listens on loopback
    spool = tempfile.mkdtemp(prefix="refstd-bench-mail-")  # unused unless an email is due
    email = EmailSender(mail_url or f"file://{spool}", settings.mail_from)
    webhook = WebhookSender.from_settings(settings, database=db)
    components = worker.components(settings, db, email, webhook)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_components(components, amqp_url, stop=stop, install_signal_handlers=False, queues=ALL_QUEUES)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="notifier-worker")
    started = time.perf_counter()
    thread.start()
    recorded_at = None
    deadline = started + timeout
    try:
        while True:
            recorded, sent = counts(db)
            now = time.perf_counter()
            if recorded_at is None and recorded >= count:
                recorded_at = now - started
            if sent >= count:
                break
            if now > deadline or failure:
                raise SystemExit(f"after {timeout:g} s: {recorded} recorded, {sent} sent of {count} ({failure})")
            time.sleep(0.25)  # on SQLite each look takes the write lock for a moment: not too often
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(timeout=60)
        db.dispose()
        shutil.rmtree(spool, ignore_errors=True)
    return recorded_at, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--database-url", help="a PostgreSQL server URL (fresh databases are created on it)")
    parser.add_argument("--rabbitmq", default=RABBITMQ)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-message log lines

    drops = []
    with fresh_vhost(args.rabbitmq) as amqp_url:
        try:
            declare_topology(amqp_url, ALL_QUEUES)

            email_events = notice_events(args.events, with_contact=True)
            fill_queue(amqp_url, email_events)
            raw_seconds = measure_raw(amqp_url, args.events)

            fill_queue(amqp_url, email_events)
            email_db, drop = fresh_database(args.database_url, "notifier")
            drops.append(drop)
            with SmtpSink() as smtp:
                email_recorded, email_seconds = measure_notifier(
                    amqp_url, email_db, args.events, mail_url=f"smtp://127.0.0.1:{smtp.port}", endpoint_url=None,
                    timeout=args.timeout)
                if smtp.received != args.events:
                    raise SystemExit(f"the SMTP sink received {smtp.received} messages, expected {args.events}")

            fill_queue(amqp_url, notice_events(args.events, with_contact=False))
            webhook_db, drop = fresh_database(args.database_url, "notifier")
            drops.append(drop)
            with WebhookSink() as hooks:
                webhook_recorded, webhook_seconds = measure_notifier(
                    amqp_url, webhook_db, args.events, mail_url=None, endpoint_url=hooks.url, timeout=args.timeout)
                if hooks.received < args.events:
                    raise SystemExit(f"the webhook sink received {hooks.received} deliveries, "
                                     f"expected {args.events}")
        finally:
            for drop in drops:
                drop()

    n = args.events
    raw_rate = n / raw_seconds
    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(f"Notifier throughput: {n} notice events (one recipient each), {kind}, quorum queue "
          f"{NOTIFIER_EVENTS.name}, prefetch {NOTIFIER_EVENTS.prefetch}\n")
    print("| run | seconds | notices/s | / raw |")
    print("|---|---:|---:|---:|")
    print(f"| raw pika consume + ack, no database | {raw_seconds:.2f} | {raw_rate:,.0f} | 1.00 |")
    for label, seconds in (
            ("notifier: events -> notification rows (email run)", email_recorded),
            ("**notifier -> SMTP sink (aiosmtpd), marked sent**", email_seconds),
            ("notifier: events -> notification rows (webhook run)", webhook_recorded),
            ("**notifier -> webhook sink (http.server), marked sent**", webhook_seconds)):
        rate = n / seconds
        print(f"| {label} | {seconds:.2f} | {rate:,.0f} | {rate / raw_rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
