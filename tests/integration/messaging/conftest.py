from __future__ import annotations

import pytest

from shared.db import Database

from .support import Base, Broker


def _database(url: str):
    db = Database(url)
    Base.metadata.create_all(db.engine)
    return db


@pytest.fixture
def db(database_url):
    """A fresh database (SQLite and PostgreSQL) with the test outbox, inbox and handled tables."""
    database = _database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def pg_db(postgres_url):
    database = _database(postgres_url)
    yield database
    database.dispose()


@pytest.fixture
def broker(amqp_url):
    b = Broker(amqp_url)
    yield b
    b.delete_owned()
    b.close()
