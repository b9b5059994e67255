"""Dead letters: ``python -m scripts.dlq list|show|replay|purge``.

A message lands in ``<queue>.dlq`` when the consumer gave up on it (``x-refstd-reason``: ``invalid``
for a message it cannot read, ``failed`` after the last retry tier) or when the broker dead-lettered it
(``x-death``: ``delivery_limit`` for a message that kept crashing the worker, ``rejected`` when the
consumer could not move it itself). The queues are those of ``services/topology.py``; the broker is
``AMQP_URL``.

    list                         every dead-letter queue with its count, and its work queue
    show QUEUE [filters]         the messages, without removing them
    replay QUEUE [filters]       move them back to the work queue, to be handled again
    purge QUEUE --yes [filters]  delete them

QUEUE is the work queue (``notifier.events``) or its DLQ (``notifier.events.dlq``). Filters: ``--type``
(an event type or a topic pattern such as ``refstd.scheduler.booking.*``), ``--id`` (event ids),
``--reason``, ``--limit``.

Each command looks at the messages in the queue when it starts, taking them without acknowledging
them; what it does not remove goes back when it ends, or when the connection drops, so a crash loses
nothing. Replay publishes a copy to the work queue (default exchange, routing key = queue name, so no
other queue bound to the event type gets it again) with publisher confirms, and acknowledges the dead
letter only after the broker confirmed the copy. A crash between the two leaves the message in both
queues: the consumer handles one copy and skips the other as a duplicate of the same event id (its
inbox). The copy starts its retry tiers afresh and counts its replays in ``x-refstd-replayed``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from services.topology import ALL_QUEUES
from shared.config import Settings
from shared.messaging.connection import broker_reachable, connect, redact_url
from shared.messaging.consumer import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    republished_properties,
)
from shared.messaging.topology import QueueSpec, topic_matches

#: How many times a message was replayed (kept by the consumer through its retries and the DLQ).
REPLAYED_HEADER = "x-refstd-replayed"
#: What the consumer wrote about its failed attempts: a replayed copy starts without them.
CONSUMER_HEADERS = (ATTEMPT_HEADER, ERROR_HEADER, REASON_HEADER, QUEUE_HEADER)
BODY_PREVIEW = 200


class DlqError(Exception):
    """A problem to report in one line (exit status 1)."""


@dataclass
class DeadLetter:
    """What an operator needs to know of one dead-lettered message."""

    event_id: str | None
    type: str | None
    reason: str | None
    error: str | None
    attempts: int | None
    replays: int
    deaths: list[dict] = field(default_factory=list)
    delivery_count: int | None = None
    body: bytes = b""

    @classmethod
    def read(cls, properties: pika.BasicProperties, body: bytes) -> DeadLetter:
        headers = properties.headers or {}
        event = _json_object(body)
        deaths = [_death(entry) for entry in headers.get("x-death") or [] if isinstance(entry, dict)]
        reason = headers.get(REASON_HEADER) or headers.get("x-first-death-reason") or (
            deaths[0]["reason"] if deaths else None)
        return cls(
            event_id=_text(event.get("id")) or properties.message_id,
            type=_text(event.get("type")) or properties.type,
            reason=_text(reason),
            error=_text(headers.get(ERROR_HEADER)),
            attempts=_integer(headers.get(ATTEMPT_HEADER)),
            replays=_integer(headers.get(REPLAYED_HEADER)) or 0,
            deaths=deaths,
            delivery_count=_integer(headers.get("x-delivery-count")),
            body=body,
        )

    def as_dict(self, preview: int = BODY_PREVIEW) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "type": self.type, "reason": self.reason, "error": self.error,
            "attempts": self.attempts, "replays": self.replays, "deaths": self.deaths,
            "delivery_count": self.delivery_count, "size": len(self.body),
            "body": self.body[:preview].decode("utf-8", errors="replace"),
        }


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _death(entry: dict) -> dict:
    """One ``x-death`` entry: why the broker dead-lettered the message, from which queue, how often."""
    when = entry.get("time")
    return {
        "reason": _text(entry.get("reason")), "queue": _text(entry.get("queue")),
        "count": _integer(entry.get("count")),
        "routing_keys": [_text(key) for key in entry.get("routing-keys") or []],
        "time": when.replace(tzinfo=dt.UTC).isoformat() if isinstance(when, dt.datetime) else _text(when),
    }


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: all of them unless filtered, at most ``limit``."""

    types: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    limit: int | None = None

    def accepts(self, letter: DeadLetter) -> bool:
        if self.types and not (letter.type and any(topic_matches(t, letter.type) for t in self.types)):
            return False
        if self.ids and letter.event_id not in self.ids:
            return False
        return not self.reasons or letter.reason in self.reasons

    @property
    def filtered(self) -> bool:
        return bool(self.types or self.ids or self.reasons or self.limit is not None)


@dataclass
class Taken:
    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes
    letter: DeadLetter


@dataclass
class Outcome:
    """What a command did: how many messages it examined, selected and removed, and which."""

    queue: str
    examined: int = 0
    selected: int = 0
    done: int = 0
    letters: list[DeadLetter] = field(default_factory=list)


# -- the broker ------------------------------------------------------------------------------------

def queue_depth(connection, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, or None if it does not exist. Never creates it."""
    channel = connection.channel()
    try:
        frame = channel.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    with contextlib.suppress(pika.exceptions.AMQPError):
        channel.close()
    return frame.method.message_count, frame.method.consumer_count


@contextlib.contextmanager
def taking(channel, queue: str, selection: Selection, outcome: Outcome) -> Iterator[Iterator[Taken]]:
    """The selected messages of ``queue``, taken unacknowledged; the caller acks those it removes.

    Only the messages there at the start are looked at (those a replay sends back to the DLQ meanwhile
    are not taken again). Every message taken and not acknowledged is returned to the queue at the end.
    """
    ready = channel.queue_declare(queue=queue, passive=True).method.message_count

    def messages() -> Iterator[Taken]:
        while outcome.examined < ready and (selection.limit is None or outcome.selected < selection.limit):
            method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                return
            outcome.examined += 1
            letter = DeadLetter.read(properties, body)
            if selection.accepts(letter):
                outcome.selected += 1
                yield Taken(method.delivery_tag, properties, body, letter)

    try:
        yield messages()
    finally:
        # A lost connection returns them as well; that must not hide the error that ended the walk.
        with contextlib.suppress(pika.exceptions.AMQPError):
            if channel.is_open:
                # Delivery tag 0 with multiple: every message of this channel not yet acknowledged.
                channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
                _wait_until_back(channel, queue, ready - outcome.done)


def _wait_until_back(channel, queue: str, expected: int, timeout: float = 5.0) -> None:
    """Wait (a few milliseconds, usually) until the queue counts the returned messages again, so that a
    ``list`` right after a ``show`` does not find them missing. Gives up quietly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue=queue, passive=True).method.message_count < expected:
        if time.monotonic() >= deadline:
            return
        channel.connection.sleep(0.01)


def show(channel, spec: QueueSpec, selection: Selection) -> Outcome:
    outcome = Outcome(spec.dlq)
    with taking(channel, spec.dlq, selection, outcome) as messages:
        outcome.letters = [taken.letter for taken in messages]
    return outcome


def acknowledge(channel, delivery_tag: int) -> None:
    channel.basic_ack(delivery_tag=delivery_tag)


def replay(channel, spec: QueueSpec, selection: Selection) -> Outcome:
    """Move the selected dead letters to the work queue, each acknowledged once the copy is confirmed.

    :raises DlqError: the broker refused a copy (work queue missing or full); that message and the
        rest stay in the DLQ.
    """
    outcome = Outcome(spec.dlq)
    channel.confirm_delivery()
    with taking(channel, spec.dlq, selection, outcome) as messages:
        for taken in messages:
            properties = republished_properties(
                taken.properties, {REPLAYED_HEADER: taken.letter.replays + 1}, drop=CONSUMER_HEADERS)
            try:
                channel.basic_publish(exchange="", routing_key=spec.name, body=taken.body, properties=properties,
                                      mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                raise DlqError(f"{spec.name} refused event {taken.letter.event_id} ({exc!r}); {outcome.done} "
                               f"replayed, the rest stay in {spec.dlq}") from exc
            acknowledge(channel, taken.delivery_tag)
            outcome.done += 1
            outcome.letters.append(taken.letter)
    return outcome


def purge(channel, spec: QueueSpec, selection: Selection) -> Outcome:
    outcome = Outcome(spec.dlq)
    if not selection.filtered:
        outcome.done = outcome.examined = outcome.selected = channel.queue_purge(queue=spec.dlq).method.message_count
        return outcome
    with taking(channel, spec.dlq, selection, outcome) as messages:
        for taken in messages:
            acknowledge(channel, taken.delivery_tag)
            outcome.done += 1
            outcome.letters.append(taken.letter)
    return outcome


# -- the command line ------------------------------------------------------------------------------

def resolve(name: str, queues: Sequence[QueueSpec]) -> QueueSpec:
    for spec in queues:
        if name in (spec.name, spec.dlq):
            return spec
    known = ", ".join(spec.name for spec in queues)
    raise DlqError(f"no queue {name!r}; the queues are: {known}")


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="python -m scripts.dlq",
        description="List, show, replay or delete the dead letters of the system's queues (docs/operations.md).")
    main_parser.add_argument("--amqp-url", help="the broker (default: AMQP_URL)")
    commands = main_parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every dead-letter queue with its count")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    for name, text in (("show", "show dead letters without removing them"),
                       ("replay", "move dead letters back to their work queue"),
                       ("purge", "delete dead letters")):
        command = commands.add_parser(name, help=text)
        command.add_argument("queue", help="the work queue (notifier.events) or its DLQ (notifier.events.dlq)")
        command.add_argument("--type", action="append", default=[], dest="types", metavar="PATTERN",
                             help="only this event type or topic pattern (repeatable)")
        command.add_argument("--id", action="append", default=[], dest="ids", metavar="EVENT_ID",
                             help="only this event id (repeatable)")
        command.add_argument("--reason", action="append", default=[], dest="reasons", metavar="REASON",
                             help="only this reason: invalid, failed, delivery_limit, rejected... (repeatable)")
        command.add_argument("--limit", type=int, default=10 if name == "show" else None,
                             help="at most this many" + (" (default 10)" if name == "show" else ""))
        if name == "show":
            command.add_argument("--bytes", type=int, default=BODY_PREVIEW, help="body bytes shown (default 200)")
            command.add_argument("--json", action="store_true", help="one JSON document")
        if name == "purge":
            command.add_argument("--yes", action="store_true", help="really delete them")
    return main_parser


def main(argv: Sequence[str] | None = None, *, queues: Sequence[QueueSpec] = ALL_QUEUES) -> int:
    args = parser().parse_args(argv)
    amqp_url = args.amqp_url or Settings("dlq").amqp_url
    try:
        if args.command != "list" and args.limit is not None and args.limit < 1:
            raise DlqError("--limit must be at least 1")
        if args.command == "show" and args.bytes < 0:
            raise DlqError("--bytes must not be negative")
        spec = resolve(args.queue, queues) if args.command != "list" else None
        if not broker_reachable(amqp_url):
            raise DlqError(f"RabbitMQ is not reachable at {redact_url(amqp_url)}")
        connection = connect(amqp_url, name="dlq")
        try:
            if args.command == "list":
                return _list(connection, queues, args.json)
            selection = Selection(tuple(args.types), tuple(args.ids), tuple(args.reasons), args.limit)
            return COMMANDS[args.command](connection, spec, selection, args)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
    except DlqError as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 1
    except pika.exceptions.ChannelClosedByBroker as exc:
        print(f"dlq: the broker refused: {exc.reply_code} {exc.reply_text}", file=sys.stderr)
        return 1


def _list(connection, queues: Sequence[QueueSpec], as_json: bool) -> int:
    rows = []
    for spec in queues:
        dlq, work = queue_depth(connection, spec.dlq), queue_depth(connection, spec.name)
        rows.append({"dlq": spec.dlq, "messages": dlq[0] if dlq else None, "queue": spec.name,
                     "ready": work[0] if work else None, "consumers": work[1] if work else None})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'dead-letter queue':32} {'messages':>8}   {'work queue':24} {'ready':>7} {'consumers':>9}")
    for row in rows:
        print(f"{row['dlq']:32} {_count(row['messages']):>8}   {row['queue']:24} {_count(row['ready']):>7} "
              f"{_count(row['consumers']):>9}")
    if any(row["messages"] is None for row in rows):
        print("(absent: no worker has declared the queue in this vhost yet)")
    return 0


def _count(value: int | None) -> str:
    return "absent" if value is None else str(value)


def _show(connection, spec: QueueSpec, selection: Selection, args) -> int:
    outcome = show(connection.channel(), spec, selection)
    if args.json:
        print(json.dumps({"queue": spec.dlq, "examined": outcome.examined,
                          "messages": [letter.as_dict(args.bytes) for letter in outcome.letters]},
                         indent=2, ensure_ascii=False))
        return 0
    print(f"{spec.dlq}: {len(outcome.letters)} shown of {outcome.examined} examined (nothing removed)")
    for number, letter in enumerate(outcome.letters, 1):
        print(_describe(number, letter, args.bytes))
    return 0


def _describe(number: int, letter: DeadLetter, preview: int) -> str:
    lines = [f"#{number} event {letter.event_id or '?'}  type {letter.type or '?'}  reason {letter.reason or '?'}"]
    if letter.error:
        lines.append(f"   error: {letter.error}")
    facts = [f"retries {letter.attempts}" if letter.attempts is not None else "",
             f"replayed {letter.replays}" if letter.replays else "",
             f"taken and put back {letter.delivery_count} time(s)" if letter.delivery_count else ""]
    if any(facts):
        lines.append("   " + ", ".join(fact for fact in facts if fact))
    for death in letter.deaths:
        lines.append(f"   x-death: {death['reason']} in {death['queue']} x{death['count']} at {death['time']} "
                     f"(routing keys {', '.join(k or '?' for k in death['routing_keys'])})")
    shown = letter.as_dict(preview)["body"]
    more = f" ... ({len(letter.body)} bytes)" if len(letter.body) > preview else ""
    lines.append(f"   body: {shown}{more}")
    return "\n".join(lines)


def _replay(connection, spec: QueueSpec, selection: Selection, _args) -> int:
    if queue_depth(connection, spec.name) is None:
        raise DlqError(f"the work queue {spec.name} does not exist: start its worker first")
    outcome = replay(connection.channel(), spec, selection)
    print(f"{spec.dlq}: {outcome.done} replayed to {spec.name} ({outcome.examined} examined)")
    for letter in outcome.letters:
        print(f"   {letter.event_id}  {letter.type}")
    return 0


def _purge(connection, spec: QueueSpec, selection: Selection, args) -> int:
    if not args.yes:
        depth = queue_depth(connection, spec.dlq)
        raise DlqError(f"{spec.dlq} holds {_count(depth[0] if depth else None)} message(s); purging deletes "
                       "them for good: run again with --yes (look first with `show`)")
    outcome = purge(connection.channel(), spec, selection)
    print(f"{spec.dlq}: {outcome.done} deleted")
    for letter in outcome.letters:
        print(f"   {letter.event_id}  {letter.type}")
    return 0


COMMANDS: dict[str, Callable[..., int]] = {"show": _show, "replay": _replay, "purge": _purge}


if __name__ == "__main__":
    raise SystemExit(main())
