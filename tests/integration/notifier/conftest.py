"""A notifier app on a fresh database (SQLite and PostgreSQL), tokens for every role, and helpers to
feed it events the way its consumer would."""

from __future__ import annotations

import pytest

from services.notifier import events
from services.notifier.app import create_app
from services.notifier.manage import prepare_database
from services.notifier.models import InboxMessage, OutboxMessage
from shared.auth import public_pem
from shared.config import Settings
from shared.db import Database
from shared.messaging.envelope import make_event
from shared.messaging.inbox import claim
from tests.support import read_outbox


@pytest.fixture
def notifier_db(db_backend, migrated_database_factory):
    database = Database(migrated_database_factory(db_backend, "notifier", prepare_database))
    yield database
    database.dispose()


@pytest.fixture
def app(notifier_db, signing_key, monkeypatch):
    monkeypatch.setenv("INSTITUTE_TZ", "Asia/Shanghai")
    settings = Settings("notifier", database_url=notifier_db.url)
    settings.jwt_public_key = public_pem(signing_key)
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    app = create_app(settings, notifier_db)
    app.testing = True
    return app


@pytest.fixture
def deliver(notifier_db):
    """``deliver(type, data)`` handles an event exactly as the consumer does (inbox claim + handler in
    one transaction); ``type`` is the full event type. Returns the event (``deliver(event=e)`` replays)."""

    def handle(event_type: str | None = None, data: dict | None = None, *, event: dict | None = None) -> dict:
        if event is None:
            source = "/services/" + event_type.split(".")[1]
            event = make_event(event_type, source, (data or {}).get("id"), data or {})
        with notifier_db.transaction() as session:
            if claim(session, InboxMessage, event["id"], "notifier.events"):
                events.handler_for(event["type"])(session, event)
        return event

    return handle


@pytest.fixture
def outbox(notifier_db):
    """``outbox(type_suffix=None)`` -> the notifier events recorded so far, oldest first."""
    return lambda type_suffix=None: read_outbox(notifier_db, OutboxMessage, type_suffix)
