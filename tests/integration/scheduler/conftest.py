"""A scheduler app on a fresh database (SQLite and PostgreSQL), tokens for every role, and helpers to
feed it inventory events the way its consumer would."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from services.scheduler import events
from services.scheduler.app import create_app
from services.scheduler.manage import prepare_database
from services.scheduler.models import InboxMessage, OutboxMessage
from shared.auth import TokenSigner, public_pem
from shared.config import Settings
from shared.db import Database
from shared.messaging.envelope import make_event
from shared.messaging.inbox import claim


@pytest.fixture(scope="session")
def signing_key():
    return Ed25519PrivateKey.generate()


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
def client(app):
    return app.test_client()


@pytest.fixture
def token_for(signing_key):
    """``token_for("partner", org_id)`` -> Authorization headers for a client of that role."""
    signer = TokenSigner(signing_key)

    def make(role: str, organization_id: str | None = None, client_id: str | None = None) -> dict:
        token = signer.issue(client_id or f"test-{role}", role, organization_id)
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin(token_for):
    return token_for("admin")


@pytest.fixture
def lab(token_for):
    return token_for("lab_staff")


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

    def read(type_suffix: str | None = None) -> list[dict]:
        with scheduler_db.Session() as session:
            rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.seq)).all()
        found = [json.loads(row.body) for row in rows]
        if type_suffix:
            found = [e for e in found if e["type"].endswith(type_suffix)]
        return found

    return read
