from __future__ import annotations

import pytest

from shared.messaging.connection import DEFAULTS, Backoff, connection_parameters, redact_url
from shared.messaging.consumer import _Registry, topic_matches
from shared.messaging.topology import DLX, EXCHANGE, QueueSpec


def test_queue_spec_names_and_arguments():
    spec = QueueSpec("scheduler.inventory", ["refstd.inventory.#"], retry_delays_ms=(1000, 10000))
    assert spec.prefetch == 50
    assert spec.dlq == "scheduler.inventory.dlq"
    assert spec.retry_queues == ["scheduler.inventory.retry.1000", "scheduler.inventory.retry.10000"]
    work = spec.work_queue_arguments()
    assert work["x-queue-type"] == "quorum"
    assert work["x-dead-letter-exchange"] == DLX
    assert work["x-dead-letter-routing-key"] == "scheduler.inventory"
    retry = spec.retry_queue_arguments(1000)
    assert retry["x-message-ttl"] == 1000
    assert retry["x-dead-letter-exchange"] == ""
    assert retry["x-dead-letter-routing-key"] == "scheduler.inventory"
    assert EXCHANGE == "refstd.events" and DLX == "refstd.dlx"
    assert QueueSpec("q", []).retry_delays_ms == (1000, 10000, 60000)


@pytest.mark.parametrize("kwargs", [{"bindings": "a.b"}, {"retry_delays_ms": (0,)}, {"prefetch": 0}, {"name": ""}])
def test_queue_spec_rejects_bad_values(kwargs):
    args = {"name": "q", "bindings": ["a.b"], **kwargs}
    with pytest.raises((TypeError, ValueError)):
        QueueSpec(**args)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "x.y", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.b.b.c", True),
        ("a.#.c", "a.b.d", False),
        ("refstd.inventory.*.registered", "refstd.inventory.instrument.registered", True),
        ("refstd.inventory.*.registered", "refstd.inventory.instrument.retired", False),
    ],
)
def test_topic_matching(pattern, key, expected):
    assert topic_matches(pattern, key) is expected


def test_exact_handlers_win_over_patterns_then_first_pattern():
    registry = _Registry({"a.#": "hash", "a.b.*": "star", "a.b.c": "exact"})
    assert registry.get("a.b.c") == "exact"
    assert registry.get("a.b.d") == "hash"
    assert registry.get("b.c") is None


def test_backoff_grows_with_jitter_and_is_capped():
    backoff = Backoff(initial=1, maximum=8)
    delays = [backoff.next() for _ in range(8)]
    for delay, step in zip(delays, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert step / 2 <= delay <= step
    backoff.reset()
    assert backoff.next() <= 1


def test_connection_parameters_are_explicit_and_the_url_wins():
    params = connection_parameters("amqp://u:p@rabbit:5673/vh", name="inventory-relay")
    assert params.host == "rabbit" and params.port == 5673 and params.virtual_host == "vh"
    assert params.heartbeat == DEFAULTS["heartbeat"]
    assert params.blocked_connection_timeout == DEFAULTS["blocked_connection_timeout"]
    assert params.connection_attempts == DEFAULTS["connection_attempts"]
    assert params.retry_delay == DEFAULTS["retry_delay"]
    assert params.socket_timeout == DEFAULTS["socket_timeout"]
    assert params.stack_timeout == DEFAULTS["stack_timeout"]
    assert params.client_properties["connection_name"] == "inventory-relay"
    assert all(value is not None for value in DEFAULTS.values())
    given = connection_parameters("amqp://u:p@rabbit/vh?heartbeat=10&connection_attempts=7")
    assert given.heartbeat == 10 and given.connection_attempts == 7


def test_redact_url():
    assert redact_url("amqp://guest:secret@host:5672/%2F") == "amqp://guest@host:5672/%2F"
    assert redact_url("amqp://host/vh") == "amqp://host/vh"
