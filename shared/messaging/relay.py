"""The outbox relay: publishes outbox rows with publisher confirms and marks them sent (rule 1).

One step (:meth:`OutboxRelay.run_once`) is one database transaction:

1. claim up to ``batch_size`` unsent rows in ``seq`` order (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so relays on several workers take disjoint batches; SQLite serialises writers with
   ``BEGIN IMMEDIATE``, which makes the whole step exclusive);
2. publish all of them (persistent, ``mandatory``) on a confirm-mode channel without waiting in
   between, then wait until the broker has confirmed every one;
3. mark only the acknowledged rows sent; a row that was nacked or returned as unroutable gets
   ``attempts + 1`` and ``last_error`` and stays unsent; commit.

A crash (or a lost connection, or a database error) anywhere before the commit rolls the step back,
so the rows are published again later: delivery is at-least-once, never lost, and consumers
deduplicate by message id (the inbox).

Batching the confirms
---------------------
``BlockingChannel.confirm_delivery()`` makes every ``basic_publish`` wait for its own confirm (one
round trip per message). The relay instead uses pika's asynchronous ``SelectConnection`` and drives
its I/O loop from the relay's own thread (:class:`BatchPublisher`): it writes the whole batch, then
runs the loop until all delivery tags are acked or nacked (the broker may confirm several at once,
``multiple=True``). A ``basic.return`` for a mandatory message that no queue took arrives before
that message's ack and marks it unroutable. The loop is also what the relay waits in while idle, so
heartbeats are answered: the relay never calls ``time.sleep`` while it holds a connection.

Failed rows
-----------
Rows that failed once (``attempts > 0``) are left out of the normal pass so they cannot crowd out
new events; a separate retry pass walks them in ``seq`` order, at most once every
``retry_interval`` seconds, doubling up to ``max_retry_interval`` while they keep failing. An
unroutable event means no queue is bound for its type (a topology or deployment problem): it is
logged as an error every time.

Ordering: rows are published in ``seq`` order within a relay. With several relays, or with a row
that failed and is retried later, consumers may see events out of order; they must not rely on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import pika
import pika.exceptions
import pika.spec
from pika.adapters.select_connection import IOLoop
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from shared.timeutil import utcnow

from .connection import Backoff, MessagingSetupError, connection_parameters, redact_url
from .envelope import CONTENT_TYPE
from .topology import EXCHANGE, EXCHANGES

log = logging.getLogger(__name__)


class PublishTimeout(pika.exceptions.AMQPConnectionError):
    """The broker did not confirm a batch in time; the connection is dropped and the batch retried."""


@dataclass
class OutgoingMessage:
    key: Hashable
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    exchange: str = EXCHANGE


@dataclass
class BatchResult:
    confirmed: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # key -> reason
    unroutable: list = field(default_factory=list)  # keys, also in failed


class BatchPublisher:
    """One AMQP connection with one confirm-mode channel, for the calling thread only.

    A ``pika.SelectConnection`` whose I/O loop is driven step by step (``IOLoop.poll`` and
    ``process_timeouts``, as ``BlockingConnection`` does internally) until a condition holds, so the
    API is synchronous while many publishes share one wait for their confirms.
    """

    def __init__(self, url: str, *, name: str = "publisher", confirm_timeout: float = 30.0) -> None:
        self.url = url
        self.name = name
        self.confirm_timeout = confirm_timeout
        self._ioloop: IOLoop | None = None
        self._connection: pika.SelectConnection | None = None
        self._channel = None
        self._state = "new"  # new -> opening -> open -> closed
        self._error: BaseException | None = None
        self._channel_error: BaseException | None = None
        self._delivery_tag = 0
        self._pending: dict[int, tuple[Hashable, str | None]] = {}
        self._returned: dict[str, str] = {}
        self._result = BatchResult()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open" and self._channel_error is None

    def open(self) -> BatchPublisher:
        params = connection_parameters(self.url, name=self.name)
        self._ioloop = IOLoop()
        self._ioloop.activate_poller()
        self._state = "opening"
        self._connection = pika.SelectConnection(
            params,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )
        try:
            self._drive(lambda: self._state != "opening", check=False)
            if self._state != "open":
                raise self._error or pika.exceptions.AMQPConnectionError("connection failed")
            opened: list = []
            self._connection.channel(on_open_callback=opened.append)
            self._drive(lambda: bool(opened))
            self._channel = opened[0]
            self._channel.add_on_close_callback(self._on_channel_closed)
            self._channel.add_on_return_callback(self._on_return)
            selected: list = []
            self._channel.confirm_delivery(self._on_confirm, callback=selected.append)
            self._drive(lambda: bool(selected))
            declared: list = []
            for exchange, kind in EXCHANGES:
                self._channel.exchange_declare(
                    exchange=exchange, exchange_type=kind, durable=True, callback=declared.append
                )
            self._drive(lambda: len(declared) == len(EXCHANGES))
        except pika.exceptions.AMQPChannelError as exc:
            self.close()
            raise MessagingSetupError(f"the broker refused the relay's channel setup: {exc!r}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        connection, self._connection = self._connection, None
        try:
            if connection is not None and (connection.is_open or connection.is_opening):
                connection.close()
                self._drive_until_closed(connection)
        except Exception:  # closing a broken connection: nothing more to do
            log.debug("error while closing the %s connection", self.name, exc_info=True)
        finally:
            self._state = "closed"
            if self._ioloop is not None:
                ioloop, self._ioloop = self._ioloop, None
                try:
                    ioloop.close()
                except Exception:
                    log.debug("error while closing the I/O loop", exc_info=True)

    def _drive_until_closed(self, connection, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not connection.is_closed and time.monotonic() < deadline and self._ioloop is not None:
            self._ioloop.poll()
            self._ioloop.process_timeouts()

    def __enter__(self) -> BatchPublisher:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- callbacks (run inside _drive, on this thread) -------------------------------------

    def _on_connection_open(self, _connection) -> None:
        self._state = "open"

    def _on_connection_open_error(self, _connection, error: BaseException) -> None:
        self._state = "closed"
        self._error = error if isinstance(error, BaseException) else pika.exceptions.AMQPConnectionError(error)

    def _on_connection_closed(self, _connection, reason: BaseException) -> None:
        self._state = "closed"
        self._error = reason

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        self._channel_error = reason

    def _on_return(self, _channel, method, properties, _body) -> None:
        self._returned[properties.message_id] = f"{method.reply_code} {method.reply_text}"

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:
            while self._pending:
                tag = next(iter(self._pending))
                if tag > method.delivery_tag:
                    break
                self._settle(tag, acked)
        else:
            self._settle(method.delivery_tag, acked)

    def _settle(self, tag: int, acked: bool) -> None:
        entry = self._pending.pop(tag, None)
        if entry is None:
            return
        key, message_id = entry
        returned = self._returned.pop(message_id, None) if message_id is not None else None
        if not acked:
            self._result.failed[key] = "nacked by the broker"
        elif returned is not None:
            self._result.failed[key] = f"unroutable: returned by the broker ({returned})"
            self._result.unroutable.append(key)
        else:
            self._result.confirmed.append(key)

    # -- driving the loop ------------------------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._state == "closed":
            raise self._error or pika.exceptions.ConnectionWrongStateError("connection is closed")
        if self._channel_error is not None:
            raise self._channel_error

    def _drive(self, done: Callable[[], bool], timeout: float | None = None, *, check: bool = True) -> bool:
        """Run the I/O loop until ``done()``; False if ``timeout`` passed first."""
        if self._ioloop is None:
            raise pika.exceptions.ConnectionWrongStateError("publisher is not open")
        deadline = None if timeout is None else time.monotonic() + timeout
        wakeup = self._ioloop.call_later(timeout, lambda: None) if timeout is not None else None
        try:
            while not done():
                if check:
                    self._raise_if_closed()
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._ioloop.poll()
                self._ioloop.process_timeouts()
            return True
        finally:
            if wakeup is not None and self._ioloop is not None:
                self._ioloop.remove_timeout(wakeup)

    def sleep(self, seconds: float) -> None:
        """Wait while answering heartbeats and noticing a lost connection."""
        self._drive(lambda: False, max(0.0, seconds))

    def publish_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
        """Publish every message (mandatory) and wait until the broker confirmed all of them.

        :raises PublishTimeout: not all confirms arrived within ``confirm_timeout``.
        :raises pika.exceptions.AMQPError: the connection or channel was lost; nothing may be
            assumed about the batch.
        """
        self._raise_if_closed()
        self._pending.clear()
        self._returned.clear()
        self._result = BatchResult()
        for message in messages:
            self._channel.basic_publish(
                exchange=message.exchange,
                routing_key=message.routing_key,
                body=message.body,
                properties=message.properties,
                mandatory=True,
            )
            self._delivery_tag += 1
            self._pending[self._delivery_tag] = (message.key, message.properties.message_id)
        if not self._drive(lambda: not self._pending, self.confirm_timeout):
            raise PublishTimeout(
                f"{len(self._pending)} of {len(messages)} messages not confirmed within {self.confirm_timeout:g} s"
            )
        return self._result


class OutboxRelay:
    """Publishes one service's outbox. Run one per worker thread (see :mod:`.worker`)."""

    def __init__(
        self,
        database,
        model: type,
        amqp_url: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
        name: str = "relay",
        confirm_timeout: float = 30.0,
        retry_interval: float = 1.0,
        max_retry_interval: float = 60.0,
        max_channel_errors: int = 5,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.database = database
        self.model = model
        self.amqp_url = amqp_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.name = name
        self.confirm_timeout = confirm_timeout
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self.max_channel_errors = max_channel_errors
        #: How many connections this relay has opened (1 + reconnects).
        self.connection_count = 0
        #: Rows this relay has published and marked sent.
        self.sent_count = 0
        self._publisher: BatchPublisher | None = None
        self._more = False
        self._retry_cursor = 0
        self._retry_due = 0.0
        self._retry_delay = retry_interval
        self._retry_pass_failed = False

    def __repr__(self) -> str:
        return f"<OutboxRelay {self.name} {self.model.__tablename__} -> {redact_url(self.amqp_url)}>"

    # -- one step ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish one batch of new rows (and, when due, one batch of failed rows).

        Returns how many rows were confirmed by the broker and marked sent.
        """
        publisher = self._ensure_publisher()
        try:
            sent, claimed = self._step(publisher, retry=False)
            self._more = claimed >= self.batch_size
            if not self._more and time.monotonic() >= self._retry_due:
                retry_sent, retry_claimed = self._step(publisher, retry=True)
                sent += retry_sent
                self._more = self._more or (retry_claimed >= self.batch_size)
        except (pika.exceptions.AMQPError, MessagingSetupError):
            self.close()
            raise
        return sent

    def _ensure_publisher(self) -> BatchPublisher:
        if self._publisher is None or not self._publisher.is_open:
            self.close()
            self._publisher = BatchPublisher(self.amqp_url, name=self.name, confirm_timeout=self.confirm_timeout).open()
            self.connection_count += 1
            log.info("%s: connected to %s", self.name, redact_url(self.amqp_url))
        return self._publisher

    def _step(self, publisher: BatchPublisher, *, retry: bool) -> tuple[int, int]:
        model = self.model
        query = select(model.seq, model.event_id, model.type, model.body).where(model.sent_at.is_(None))
        if retry:
            query = query.where(model.attempts > 0, model.seq > self._retry_cursor)
        else:
            query = query.where(model.attempts == 0)
        query = query.order_by(model.seq).limit(self.batch_size)
        if self.database.is_postgres:
            query = query.with_for_update(skip_locked=True)

        result = BatchResult()
        with self.database.transaction() as session:
            rows = session.execute(query).all()
            if rows:
                messages = [
                    OutgoingMessage(
                        key=row.seq,
                        routing_key=row.type,
                        body=row.body.encode(),
                        properties=pika.BasicProperties(
                            delivery_mode=pika.DeliveryMode.Persistent,
                            content_type=CONTENT_TYPE,
                            message_id=row.event_id,
                            type=row.type,
                        ),
                    )
                    for row in rows
                ]
                result = publisher.publish_batch(messages)
                if result.confirmed:
                    self._mark_sent(session, result.confirmed)
                if result.failed:
                    self._mark_failed(session, result.failed)
                    self._report_failures(rows, result)
        # Committed.
        sent = len(result.confirmed)
        self.sent_count += sent
        if result.failed and not retry:
            # Freshly failed rows wait at least one retry interval.
            self._retry_due = max(self._retry_due, time.monotonic() + self._retry_delay)
        if retry:
            self._retry_pass_failed = self._retry_pass_failed or bool(result.failed)
            if len(rows) < self.batch_size:
                self._finish_retry_pass()
            else:
                self._retry_cursor = rows[-1].seq
        return sent, len(rows)

    def _finish_retry_pass(self) -> None:
        if self._retry_pass_failed:
            self._retry_delay = min(self.max_retry_interval, self._retry_delay * 2)
        else:
            self._retry_delay = self.retry_interval
        self._retry_cursor = 0
        self._retry_pass_failed = False
        self._retry_due = time.monotonic() + self._retry_delay

    def _mark_sent(self, session, seqs: list) -> None:
        model = self.model
        session.execute(
            update(model).where(model.seq.in_(seqs)).values(sent_at=utcnow()),
            execution_options={"synchronize_session": False},
        )

    def _mark_failed(self, session, failed: dict) -> None:
        model = self.model
        by_reason: dict[str, list] = {}
        for seq, reason in failed.items():
            by_reason.setdefault(reason, []).append(seq)
        for reason, seqs in by_reason.items():
            session.execute(
                update(model).where(model.seq.in_(seqs)).values(attempts=model.attempts + 1, last_error=reason[:2000]),
                execution_options={"synchronize_session": False},
            )

    def _report_failures(self, rows, result: BatchResult) -> None:
        types = {row.seq: row.type for row in rows}
        events = {row.seq: row.event_id for row in rows}
        if result.unroutable:
            counts = Counter(types[seq] for seq in result.unroutable)
            log.error(
                "%s: %d event(s) UNROUTABLE, no queue is bound for their type (topology or deployment "
                "problem): %s; first event %s; they stay unsent and are retried",
                self.name,
                len(result.unroutable),
                ", ".join(f"{t} x{n}" for t, n in counts.items()),
                events[result.unroutable[0]],
            )
        unroutable = set(result.unroutable)
        nacked = [seq for seq in result.failed if seq not in unroutable]
        if nacked:
            log.error(
                "%s: %d event(s) nacked by the broker (first: %s, %s); they stay unsent and are retried",
                self.name,
                len(nacked),
                events[nacked[0]],
                types[nacked[0]],
            )

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; reconnect with backoff when the connection is lost."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        channel_errors = 0
        log.info("%s: relaying %s to %s", self.name, self.model.__tablename__, redact_url(self.amqp_url))
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                    backoff.reset()
                    channel_errors = 0
                    if not self._more:
                        self._wait(stop, self.poll_interval)
                except MessagingSetupError:
                    log.error("%s: stopping: the broker refused the setup", self.name, exc_info=True)
                    raise
                except pika.exceptions.AMQPChannelError as exc:
                    channel_errors += 1
                    delay = backoff.next()
                    log.error(
                        "%s: the broker closed the channel (%r): a topology or permission problem, "
                        "not a network one; reconnecting in %.1f s (%d/%d)",
                        self.name,
                        exc,
                        delay,
                        channel_errors,
                        self.max_channel_errors,
                    )
                    if channel_errors >= self.max_channel_errors:
                        raise
                    self._wait(stop, delay)
                except pika.exceptions.AMQPConnectionError as exc:
                    delay = backoff.next()
                    log.warning("%s: connection lost (%r); reconnecting in %.1f s", self.name, exc, delay)
                    self._wait(stop, delay)
                except SQLAlchemyError as exc:
                    delay = backoff.next()
                    log.error("%s: database error (%s); retrying in %.1f s", self.name, exc, delay)
                    self._wait(stop, delay)
                except Exception:
                    delay = backoff.next()
                    log.exception("%s: unexpected error; retrying in %.1f s", self.name, delay)
                    self.close()
                    self._wait(stop, delay)
        finally:
            self.close()
            log.info("%s: stopped", self.name)

    def _wait(self, stop: threading.Event, seconds: float) -> None:
        """Wait without starving the connection (if one is open) and wake soon after ``stop``."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            chunk = min(remaining, 0.2)
            publisher = self._publisher
            if publisher is not None and publisher.is_open:
                try:
                    publisher.sleep(chunk)
                except pika.exceptions.AMQPError as exc:
                    log.warning("%s: connection lost while idle (%r)", self.name, exc)
                    self.close()
            else:
                stop.wait(chunk)

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
