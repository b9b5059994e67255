"""An inventory app on a fresh database (SQLite and PostgreSQL), and tokens for every role."""

from __future__ import annotations

import pytest

from services.inventory.app import create_app
from services.inventory.manage import prepare_database
from services.inventory.models import Organization, OutboxMessage
from shared.config import Settings
from shared.db import Database
from tests.support import read_outbox, valid_credit_code


@pytest.fixture
def inventory_db(db_backend, migrated_database_factory):
    database = Database(migrated_database_factory(db_backend, "inventory", prepare_database))
    yield database
    database.dispose()


@pytest.fixture
def app(inventory_db, signing_key_pem, monkeypatch):
    monkeypatch.setenv("INSTITUTE_TZ", "Asia/Shanghai")
    settings = Settings("inventory", database_url=inventory_db.url)
    settings.jwt_private_key = signing_key_pem
    settings.bootstrap_client_id = "bootstrap-admin"
    settings.bootstrap_client_secret = "bootstrap-secret-for-tests"
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    app = create_app(settings, inventory_db)
    app.testing = True
    return app


@pytest.fixture
def orgs(inventory_db):
    """Two enterprises and a partner university, written directly (no events)."""
    with inventory_db.transaction() as session:
        a = Organization(name="淄博示例氢能材料有限公司", kind="enterprise",
                         credit_code=valid_credit_code("91370300MA3C00001"),
                         contacts=[{"name": "王工", "email": "wang@example.com", "locale": "zh-CN"}])
        b = Organization(name="Example Biomedicine Co.", kind="enterprise",
                         credit_code=valid_credit_code("91370300MA3C00002"), contacts=[])
        u = Organization(name="示例大学", kind="university", contacts=[])
        session.add_all([a, b, u])
        session.flush()
        return {"a": a.id, "b": b.id, "university": u.id}


@pytest.fixture
def outbox(inventory_db):
    """``outbox(type_suffix=None)`` -> the events recorded so far, oldest first, as decoded envelopes."""
    return lambda type_suffix=None: read_outbox(inventory_db, OutboxMessage, type_suffix)
