"""Relay throughput against raw pika publishing, measured in the same run.

    .venv/bin/python -m bench.relay_throughput [--rows 20000] [--database-url URL] [--batch-size 500]

Creates a fresh RabbitMQ vhost (``rabbitmqctl``) and a fresh database (a temporary SQLite file by
default; with ``--database-url`` a new database on that PostgreSQL server), writes N outbox rows,
then measures on the same broker, exchange, routing key and quorum queue:

(a) raw pika: ``BlockingChannel.basic_publish`` of the same N bodies and properties, no confirms;
(b) the relay draining the N rows: claim, publish with confirms, mark sent, commit.

Both include opening their connection. Prints a Markdown table; everything is deleted afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time

import pika
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from bench.support import RABBITMQ, fresh_database, fresh_vhost
from shared.db import Database
from shared.messaging.connection import connect
from shared.messaging.envelope import CONTENT_TYPE
from shared.messaging.outbox import Outbox, OutboxMixin
from shared.messaging.relay import OutboxRelay
from shared.messaging.topology import EXCHANGE, declare_exchanges

EVENT_TYPE = "refstd.bench.instrument.registered"
QUEUE = "bench.relay"


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


def write_rows(db: Database, rows: int) -> list[tuple[str, bytes, str]]:
    outbox = Outbox(OutboxMessage, "/services/bench")
    for start in range(0, rows, 1000):
        with db.transaction() as session:
            for i in range(start, min(rows, start + 1000)):
                outbox.add(session, EVENT_TYPE, f"I-{i}", {"serial": f"SN-{i:06d}", "n": i, "unit": "kPa"})
    with db.transaction() as session:
        result = session.execute(
            select(OutboxMessage.event_id, OutboxMessage.body, OutboxMessage.type).order_by(OutboxMessage.seq)
        )
        return [(event_id, body.encode(), kind) for event_id, body, kind in result]


def wait_for_depth(channel, connection, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue=QUEUE, passive=True).method.message_count < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"the queue did not reach {expected} messages")
        connection.sleep(0.05)


def measure_raw(amqp_url: str, messages: list[tuple[str, bytes, str]]) -> float:
    started = time.perf_counter()
    connection = connect(amqp_url, name="bench-raw")
    channel = connection.channel()
    for event_id, body, kind in messages:
        channel.basic_publish(
            exchange=EXCHANGE,
            routing_key=kind,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type=CONTENT_TYPE,
                message_id=event_id,
                type=kind,
            ),
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def measure_relay(db: Database, amqp_url: str, batch_size: int) -> float:
    started = time.perf_counter()
    relay = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=batch_size, name="bench-relay")
    try:
        while relay.run_once():
            pass
    finally:
        elapsed = time.perf_counter() - started
        relay.close()
    with db.transaction() as session:
        unsent = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))
    if unsent:
        raise SystemExit(f"the relay left {unsent} rows unsent")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--database-url", help="a PostgreSQL server URL (a fresh database is created on it)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rabbitmq", default=RABBITMQ)
    args = parser.parse_args(argv)

    with fresh_vhost(args.rabbitmq) as amqp_url:
        database_url, drop_database = fresh_database(args.database_url, "relay")
        try:
            db = Database(database_url)
            Base.metadata.create_all(db.engine)
            messages = write_rows(db, args.rows)

            setup = connect(amqp_url, name="bench-setup")
            channel = setup.channel()
            declare_exchanges(channel)
            channel.queue_declare(queue=QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_bind(queue=QUEUE, exchange=EXCHANGE, routing_key=EVENT_TYPE)

            raw_seconds = measure_raw(amqp_url, messages)
            wait_for_depth(channel, setup, args.rows)
            channel.queue_purge(queue=QUEUE)

            relay_seconds = measure_relay(db, amqp_url, args.batch_size)
            wait_for_depth(channel, setup, args.rows)
            setup.close()
            db.dispose()
        finally:
            drop_database()

    raw_rate = args.rows / raw_seconds
    relay_rate = args.rows / relay_seconds
    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(f"Relay throughput: {args.rows} outbox rows, {kind}, batch size {args.batch_size}, quorum queue\n")
    print("| publisher | seconds | msg/s |")
    print("|---|---:|---:|")
    print(f"| raw pika `BlockingChannel.basic_publish`, no confirms | {raw_seconds:.2f} | {raw_rate:,.0f} |")
    print(f"| `OutboxRelay` (claim, publish, all confirms, mark sent) | {relay_seconds:.2f} | {relay_rate:,.0f} |")
    print(f"| **relay / raw** | | **{relay_rate / raw_rate:.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
