"""Test-only models and utilities for the messaging tests."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid

import pika
import pika.exceptions
from sqlalchemy import Integer, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.messaging.connection import connect
from shared.messaging.inbox import InboxMixin
from shared.messaging.outbox import Outbox, OutboxMixin
from shared.messaging.topology import EXCHANGE, declare_exchanges

SOURCE = "/services/test"


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxMessage(InboxMixin, Base):
    pass


class Handled(Base):
    """What a test handler did, written in the consumer's transaction."""

    __tablename__ = "handled"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(255))


OUTBOX = Outbox(OutboxMessage, SOURCE)


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def add_events(db, count: int, event_type: str, *, batch: int = 1000) -> list[str]:
    """Write ``count`` outbox rows (in transactions of ``batch``); returns their event ids in order."""
    ids: list[str] = []
    for start in range(0, count, batch):
        with db.transaction() as session:
            for i in range(start, min(count, start + batch)):
                ids.append(OUTBOX.add(session, event_type, f"item-{i}", {"n": i})["id"])
    return ids


def unsent_count(db) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))


class Broker:
    """A blocking connection of the test's own thread, for declaring, publishing and reading."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = None
        self.channel = None
        self.owned: list[str] = []

    def own(self, spec) -> None:
        """Delete the queues of ``spec`` at the end of the test (a vhost full of quorum queues is
        slow to delete at the end of the run)."""
        self.owned += [spec.name, spec.dlq, *spec.retry_queues]

    def delete_owned(self) -> None:
        for name in self.owned:
            for _ in range(2):  # once more on a fresh connection if this one was dropped
                try:
                    self.ch().queue_delete(queue=name)
                    break
                except pika.exceptions.AMQPError:
                    self.close()
        self.owned.clear()

    def ch(self):
        if self.connection is None or not self.connection.is_open or not self.channel.is_open:
            self.close()
            self.connection = connect(self.url, name="test")
            self.channel = self.connection.channel()
            declare_exchanges(self.channel)
        return self.channel

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):
                self.connection.close()
        self.connection = self.channel = None

    def bind_queue(self, name: str, *patterns: str) -> str:
        """A plain durable quorum queue bound to the event exchange."""
        ch = self.ch()
        ch.queue_declare(queue=name, durable=True, arguments={"x-queue-type": "quorum"})
        self.owned.append(name)
        for pattern in patterns:
            ch.queue_bind(queue=name, exchange=EXCHANGE, routing_key=pattern)
        return name

    def depth(self, name: str) -> int:
        return self.ch().queue_declare(queue=name, passive=True).method.message_count

    def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        exchange: str = EXCHANGE,
        headers: dict | None = None,
    ) -> None:
        ch = self.ch()
        ch.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/cloudevents+json",
                message_id=message_id,
                headers=headers,
            ),
        )

    def drain(self, name: str, expected: int, timeout: float = 15.0) -> list[tuple]:
        """Take ``expected`` messages off the queue (auto-ack); fails if they do not all arrive."""
        ch = self.ch()
        got: list[tuple] = []
        deadline = time.monotonic() + timeout
        if expected:
            for method, properties, body in ch.consume(name, auto_ack=True, inactivity_timeout=0.2):
                if method is not None:
                    got.append((properties, body))
                if len(got) >= expected or time.monotonic() >= deadline:
                    break
            ch.cancel()
        assert len(got) == expected, f"{name}: expected {expected} messages, got {len(got)}"
        return got


def close_vhost_connections(amqp_url: str) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "closed by a test"],
        check=True,
        capture_output=True,
        timeout=60,
    )


class Running:
    """Runs a component's ``run(stop)`` in a thread for the duration of a ``with`` block."""

    def __init__(self, component, stop: threading.Event | None = None) -> None:
        self.component = component
        self.stop = stop or threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._target, name=getattr(component, "name", "component"))

    def _target(self) -> None:
        try:
            self.component.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self.component

    def __exit__(self, exc_type, *_rest) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.component!r} did not stop"
        if self.error is not None and exc_type is None:
            raise self.error
