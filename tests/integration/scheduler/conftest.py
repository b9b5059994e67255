"""A scheduler app on a fresh database (SQLite and PostgreSQL), tokens for every role, and helpers to
feed it inventory events the way its consumer would."""

from __future__ import annotations

import pytest

from services.scheduler import events
from services.scheduler.app import create_app
from services.scheduler.manage import prepare_database
from services.scheduler.models import InboxMessage, OutboxMessage
from shared.auth import public_pem
from shared.config import Settings
from shared.db import Database
from shared.messaging.envelope import make_event
from shared.messaging.inbox import claim
from tests.support import read_outbox


@pytest.fixture
def scheduler_db(db_backend, migrated_database_factory):
    database = Database(migrated_database_factory(db_backend, "scheduler", prepare_database))
    yield database
    database.dispose()


@pytest.fixture
def app(scheduler_db, signing_key, monkeypatch):
    monkeypatch.setenv("INSTITUTE_TZ", "Asia/Shanghai")
    settings = Settings("scheduler", database_url=scheduler_db.url)
    settings.jwt_public_key = public_pem(signing_key)
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    app = create_app(settings, scheduler_db)
    app.testing = True
    return app


@pytest.fixture
def deliver(scheduler_db):
    """``deliver(type_suffix, data)`` handles an inventory event exactly as the consumer does:
    inbox claim and handler in one transaction. Returns the event (deliver it again to replay it)."""

    def handle(type_suffix: str, data: dict | None = None, *, event: dict | None = None) -> dict:
        event = event or make_event(events.INVENTORY + type_suffix, "/services/inventory", data.get("id"), data)
        with scheduler_db.transaction() as session:
            if claim(session, InboxMessage, event["id"], "scheduler.inventory"):
                events.INVENTORY_HANDLERS[event["type"]](session, event)
        return event

    return handle


@pytest.fixture
def outbox(scheduler_db):
    """``outbox(type_suffix=None)`` -> the scheduler events recorded so far, oldest first."""
    return lambda type_suffix=None: read_outbox(scheduler_db, OutboxMessage, type_suffix)
