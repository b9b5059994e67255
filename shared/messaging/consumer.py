"""The consumer: one queue, handlers by event type, inbox, delayed retries, DLQ (rule 4).

For each delivery:

- the body is decoded and validated as a CloudEvents envelope, and its ``data`` against the schema
  registered for its type, if any; a message that fails is *poison*: it goes to ``<queue>.dlq`` at
  once (never retried) and the consumer carries on;
- a type without a handler is acknowledged and skipped (the queue's bindings may be wider than
  what this consumer handles);
- otherwise, in ONE database transaction, the inbox row ``(event id, consumer name)`` is claimed and
  the handler runs; the transaction commits and only THEN is the message acknowledged. A duplicate
  (already claimed) is acknowledged without running the handler;
- if the handler (or the transaction) raises, the message is republished (with publisher
  confirms) to the next delay queue ``<queue>.retry.<ms>``, which hands it back to the queue when
  its TTL expires, and the original is acknowledged; after the last tier it goes to the DLQ. The
  number of retries so far travels in the ``x-refstd-attempt`` header, the last error in
  ``x-refstd-error``.

Handlers are called as ``handler(session, event)`` with the event dict exactly as published; the
session's transaction is committed by the consumer. While a handler runs,
:data:`shared.context.correlation_id` holds the event's ``correlationid``, so events it writes to
its own outbox carry the same correlation id.

Handlers run on the connection's thread: a handler that blocks for longer than the heartbeat
timeout (30 s by default) gets the connection dropped, and the message is redelivered. Keep
handlers short; outbound HTTP and SMTP calls need their own timeouts well below that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pika
import pika.exceptions
from sqlalchemy.orm import Session

from shared.context import correlation_id

from .connection import Backoff, MessagingSetupError, connect, redact_url
from .envelope import InvalidMessage, decode
from .inbox import claim
from .topology import QueueSpec, declare_queue, topic_matches

log = logging.getLogger(__name__)

Handler = Callable[[Session, dict], None]

ATTEMPT_HEADER = "x-refstd-attempt"
ERROR_HEADER = "x-refstd-error"
REASON_HEADER = "x-refstd-reason"
QUEUE_HEADER = "x-refstd-queue"

#: Headers the broker sets on dead-lettering and delivery; not copied when republishing.
_BROKER_HEADERS = ("x-death", "x-delivery-count")
_BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")


class _Registry:
    """Values keyed by exact type or by topic pattern; exact keys win, then patterns in order."""

    def __init__(self, items: Mapping[str, Any] | None) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[str, Any]] = []
        for key, value in (items or {}).items():
            if "*" in key.split(".") or "#" in key.split("."):
                self.patterns.append((key, value))
            else:
                self.exact[key] = value
        self._cache: dict[str, Any] = {}

    def get(self, event_type: str) -> Any:
        if event_type in self.exact:
            return self.exact[event_type]
        if event_type not in self._cache:
            self._cache[event_type] = next(
                (value for pattern, value in self.patterns if topic_matches(pattern, event_type)), None
            )
        return self._cache[event_type]


class Consumer:
    """Consumes one queue (``spec``) into one service's database. One per worker thread."""

    def __init__(
        self,
        database,
        inbox_model: type,
        amqp_url: str,
        spec: QueueSpec,
        handlers: dict[str, Handler],
        *,
        name: str | None = None,
        schemas: dict[str, Any] | None = None,
        max_channel_errors: int = 5,
    ) -> None:
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        self.database = database
        self.inbox_model = inbox_model
        self.amqp_url = amqp_url
        self.spec = spec
        #: The consumer's name: the ``consumer`` column of its inbox rows and its connection name.
        self.name = name or spec.name
        self.max_channel_errors = max_channel_errors
        self._handlers = _Registry(handlers)
        self._schemas = _Registry(
            {key: (schema() if isinstance(schema, type) else schema) for key, schema in (schemas or {}).items()}
        )
        self._stop = threading.Event()
        self._publish_channel = None
        self._progress = False
        #: Set while connected and consuming (topology declared); cleared when the connection is lost.
        self.ready = threading.Event()
        #: Counters, for tests and metrics.
        self.connection_count = 0
        self.processed_count = 0
        self.duplicate_count = 0
        self.retried_count = 0
        self.dead_lettered_count = 0

    def __repr__(self) -> str:
        return f"<Consumer {self.name} {self.spec.name} <- {redact_url(self.amqp_url)}>"

    def handler_for(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; reconnect with backoff (and redeclare) on connection loss.

        On stop the message being handled is finished (committed and acknowledged); messages
        prefetched but not started are returned to the queue when the connection closes.
        """
        self._stop = stop
        backoff = Backoff(initial=0.5, maximum=30.0)
        channel_errors = 0
        log.info("%s: consuming %s from %s", self.name, self.spec.name, redact_url(self.amqp_url))
        try:
            while not stop.is_set():
                self._progress = False
                try:
                    self._consume(stop, on_ready=backoff.reset)
                except MessagingSetupError:
                    log.error("%s: stopping: the broker refused the setup", self.name, exc_info=True)
                    raise
                except pika.exceptions.AMQPChannelError as exc:
                    channel_errors = 1 if self._progress else channel_errors + 1
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
                    stop.wait(delay)
                except pika.exceptions.AMQPConnectionError as exc:
                    delay = backoff.next()
                    log.warning("%s: connection lost (%r); reconnecting in %.1f s", self.name, exc, delay)
                    stop.wait(delay)
                except Exception:
                    delay = backoff.next()
                    log.exception("%s: unexpected error; reconnecting in %.1f s", self.name, delay)
                    stop.wait(delay)
        finally:
            log.info("%s: stopped", self.name)

    def _consume(self, stop: threading.Event, on_ready: Callable[[], None]) -> None:
        connection = connect(self.amqp_url, name=self.name)
        self.connection_count += 1
        try:
            channel = connection.channel()
            try:
                declare_queue(channel, self.spec)
            except pika.exceptions.AMQPChannelError as exc:
                raise MessagingSetupError(
                    f"declaring the topology of {self.spec.name} failed: {exc!r} (queue arguments changed? "
                    "delete the queue or move the setting to a policy)"
                ) from exc
            publish_channel = connection.channel()
            publish_channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.spec.prefetch)
            cancelled: list = []
            # The broker cancels the consumer when its queue is deleted: without this the loop
            # below would go on, consuming nothing.
            channel.add_on_cancel_callback(cancelled.append)
            channel.basic_consume(queue=self.spec.name, on_message_callback=self._on_message)
            self._publish_channel = publish_channel
            self.ready.set()
            on_ready()
            log.info("%s: connected, consuming %s", self.name, self.spec.name)
            while not stop.is_set():
                connection.process_data_events(time_limit=0.2)
                if cancelled:
                    raise pika.exceptions.ConsumerCancelled(
                        f"the broker cancelled the consumer of {self.spec.name} (queue deleted?)"
                    )
        finally:
            self.ready.clear()
            self._publish_channel = None
            if connection.is_open:
                try:
                    connection.close()
                except Exception:
                    log.debug("%s: error while closing the connection", self.name, exc_info=True)

    # -- one delivery ------------------------------------------------------------------------

    def _on_message(self, channel, method, properties: pika.BasicProperties, body: bytes) -> None:
        if self._stop.is_set():
            return  # not started: returned to the queue when the connection closes
        try:
            self._process(channel, method, properties, body)
        except pika.exceptions.AMQPError:
            raise  # the connection or channel is gone: the message will be redelivered
        except Exception as exc:  # a bug in this module; never let one message stop the consumer
            log.exception("%s: could not process delivery %s; rejecting it to the DLQ", self.name, method.delivery_tag)
            self._dead_letter(channel, method, properties, body, "failed", exc)

    def _process(self, channel, method, properties: pika.BasicProperties, body: bytes) -> None:
        try:
            event = decode(body)
        except InvalidMessage as exc:
            log.error(
                "%s: poison message %s (type %s) sent to %s: %s",
                self.name,
                properties.message_id,
                properties.type,
                self.spec.dlq,
                exc,
            )
            self._dead_letter(channel, method, properties, body, "invalid", exc)
            return

        event_type = event["type"]
        handler = self.handler_for(event_type)
        if handler is None:
            log.info("%s: no handler for %s; event %s acknowledged", self.name, event_type, event["id"])
            channel.basic_ack(delivery_tag=method.delivery_tag)
            return

        schema = self._schemas.get(event_type)
        if schema is not None:
            errors = schema.validate(event["data"])
            if errors:
                log.error(
                    "%s: event %s (%s) has invalid data, sent to %s: %s",
                    self.name,
                    event["id"],
                    event_type,
                    self.spec.dlq,
                    errors,
                )
                self._dead_letter(channel, method, properties, body, "invalid", InvalidMessage(str(errors)))
                return

        token = correlation_id.set(event.get("correlationid") or event["id"])
        try:
            with self.database.transaction() as session:
                first = claim(session, self.inbox_model, event["id"], self.name)
                if first:
                    handler(session, event)
        except Exception as exc:
            self._retry(channel, method, properties, body, event, exc)
            return
        finally:
            correlation_id.reset(token)

        channel.basic_ack(delivery_tag=method.delivery_tag)
        self._progress = True
        if first:
            self.processed_count += 1
        else:
            self.duplicate_count += 1
            log.info("%s: duplicate %s (%s) skipped", self.name, event["id"], event_type)

    def _retry(self, channel, method, properties, body, event: dict, exc: Exception) -> None:
        attempt = _attempt(properties)
        delays = self.spec.retry_delays_ms
        if attempt >= len(delays):
            log.error(
                "%s: event %s (%s) failed after %d retries, sent to %s: %r",
                self.name,
                event["id"],
                event["type"],
                attempt,
                self.spec.dlq,
                exc,
                exc_info=exc,
            )
            self._dead_letter(channel, method, properties, body, "failed", exc)
            return
        target = self.spec.retry_queue(delays[attempt])
        log.warning(
            "%s: handler for %s (%s) failed (%r); retry %d/%d in %d ms",
            self.name,
            event["id"],
            event["type"],
            exc,
            attempt + 1,
            len(delays),
            delays[attempt],
            exc_info=exc,
        )
        if self._republish(target, properties, body, {ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: _describe(exc)}):
            channel.basic_ack(delivery_tag=method.delivery_tag)
            self.retried_count += 1
        else:
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=False)
            self.dead_lettered_count += 1

    def _dead_letter(self, channel, method, properties, body, reason: str, exc: BaseException) -> None:
        headers = {REASON_HEADER: reason, ERROR_HEADER: _describe(exc), QUEUE_HEADER: self.spec.name}
        if self._republish(self.spec.dlq, properties, body, headers):
            channel.basic_ack(delivery_tag=method.delivery_tag)
        else:
            # The broker's own dead-lettering (the queue's DLX) is the fallback.
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=False)
        self.dead_lettered_count += 1

    def _republish(self, queue: str, properties: pika.BasicProperties, body: bytes, extra: dict) -> bool:
        """Publish a copy to ``queue`` through the default exchange; True once the broker confirmed."""
        copy = republished_properties(properties, extra)
        try:
            self._publish_channel.basic_publish(
                exchange="", routing_key=queue, body=body, properties=copy, mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            log.error(
                "%s: could not move message %s to %s (%r); rejecting it to the queue's dead-letter exchange",
                self.name,
                properties.message_id,
                queue,
                exc,
            )
            return False
        return True


def republished_properties(
    properties: pika.BasicProperties, extra: Mapping[str, Any], *, drop: Collection[str] = ()
) -> pika.BasicProperties:
    """Persistent properties for publishing a delivery again: its own, without the headers the broker
    added (``x-death``, ...) or those in ``drop``, plus ``extra``. Also used by ``scripts.dlq``."""
    headers = {
        key: value
        for key, value in (properties.headers or {}).items()
        if key not in _BROKER_HEADERS and key not in drop and not key.startswith(_BROKER_HEADER_PREFIXES)
    }
    headers.update(extra)
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        headers=headers,
    )


def _attempt(properties: pika.BasicProperties) -> int:
    try:
        return max(0, int((properties.headers or {}).get(ATTEMPT_HEADER, 0)))
    except (TypeError, ValueError):
        return 0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]
