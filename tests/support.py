"""Helpers shared by the tests of every service."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from services.inventory.domain import credit_code_check_char

RABBIT_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672")


def read_outbox(database, model, type_suffix: str | None = None) -> list[dict]:
    """The events a service recorded so far, oldest first, as decoded envelopes."""
    with database.Session() as session:
        rows = session.scalars(select(model).order_by(model.seq)).all()
    events = [json.loads(row.body) for row in rows]
    return [e for e in events if e["type"].endswith(type_suffix)] if type_suffix else events


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def valid_credit_code(body17: str) -> str:
    """A unified social credit code (GB 32100-2015): the 17 characters given and their check character."""
    return body17 + credit_code_check_char(body17)


def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl -q <args>``'s output; the test fails (never skips) if the broker cannot be reached."""
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(
            f"RabbitMQ is needed for these tests and `rabbitmqctl {' '.join(args)}` failed: "
            f"{result.stderr.strip() or result.stdout.strip()}. Start it with `rabbitmq-server -detached`.",
            pytrace=False,
        )
    return result.stdout


@contextlib.contextmanager
def broker_vhost(name: str) -> Iterator[str]:
    """A fresh vhost on the real broker, open to guest; its AMQP URL. Deleted afterwards."""
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBIT_HOST}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)
