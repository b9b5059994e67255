"""What every benchmark sets up: a fresh RabbitMQ vhost and fresh databases, removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url

from shared.db import Database, normalize_url

RABBITMQ = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=120).stdout


@contextmanager
def fresh_vhost(rabbitmq: str = RABBITMQ) -> Iterator[str]:
    """The AMQP URL of a new vhost (guest has every permission on it), deleted on leaving."""
    vhost = f"refstd-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{rabbitmq}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def fresh_database(url: str | None, label: str = "bench") -> tuple[str, Callable[[], None]]:
    """A new empty database and the function that removes it: a temporary SQLite file when ``url`` is
    None, else a new database on the PostgreSQL server of ``url``."""
    if url is None:
        directory = tempfile.mkdtemp(prefix="refstd-bench-")
        return f"sqlite:///{directory}/{label}.db", lambda: shutil.rmtree(directory, ignore_errors=True)
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit("--database-url must be a PostgreSQL server URL")
    name = f"refstd_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = Database(url, isolation_level="AUTOCOMMIT")
    with admin.engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop
