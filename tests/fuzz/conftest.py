"""The fuzzed services, on SQLite and on PostgreSQL: each on a fresh copy of a seeded database, with
tokens for every role.

The seeded databases are made once per test process and backend (the inventory's sample data; the
scheduler and the notifier fed with its events) and copied for each test, so that what one operation's
cases change never reaches another's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from services.inventory.manage import prepare_database as prepare_inventory
from services.inventory.models import Instrument, Organization
from services.notifier import webhooks
from services.notifier.manage import prepare_database as prepare_notifier
from services.scheduler.manage import prepare_database as prepare_scheduler
from shared.auth import TokenSigner
from shared.db import Database
from tests.fuzz import seeding
from tests.fuzz.support import KNOWN_ROWS, create_app, settings_for

PREPARE = {"inventory": prepare_inventory, "scheduler": prepare_scheduler, "notifier": prepare_notifier}
# Receiver URLs are checked by resolving their host: here every name resolves to this public address
# (never connected to), so that fuzzing sends no DNS queries.
FAKE_RECEIVER_ADDRESS = "93.184.215.14"


@dataclass
class Seeded:
    """The seeded databases of one backend: template URLs and real rows by service, and the organizations
    of the non-staff tokens."""

    urls: dict[str, str]
    rows: dict[str, seeding.Rows]
    enterprise: str
    partner: str


@pytest.fixture(scope="session")
def seeded_databases(signing_key, tmp_path_factory, postgres_database_factory):
    """``seeded_databases(backend)`` -> the :class:`Seeded` databases of that backend, made on first use."""
    made: dict[str, Seeded] = {}

    def seed(backend: str) -> Seeded:
        if backend not in made:
            made[backend] = _seed(backend, signing_key, tmp_path_factory, postgres_database_factory)
        return made[backend]

    return seed


def _seed(backend: str, signing_key, tmp_path_factory, postgres_database_factory) -> Seeded:
    if backend == "postgresql":
        databases = {service: Database(postgres_database_factory(f"fuzz_{service}")) for service in PREPARE}
    else:
        folder = tmp_path_factory.mktemp("fuzz-templates")
        databases = {service: Database(f"sqlite:///{folder / (service + '.db')}") for service in PREPARE}
    try:
        for service, database in databases.items():
            PREPARE[service](database)
        inventory_rows, inventory_events = seeding.seed_inventory(databases["inventory"])
        scheduler_rows, scheduler_events = seeding.seed_scheduler(
            databases["scheduler"], settings_for("scheduler", databases["scheduler"], signing_key), inventory_events)
        with databases["inventory"].Session() as session:
            enterprise = session.scalars(select(Instrument.organization_id).order_by(Instrument.serial_number)).first()
            partner = session.scalars(select(Organization.id).where(Organization.kind == "university")
                                      .order_by(Organization.name)).first()
        notifier_rows = seeding.seed_notifier(databases["notifier"], inventory_events + scheduler_events, partner)
    finally:
        for database in databases.values():
            database.dispose()  # a PostgreSQL template must have no connections left
    rows = {"inventory": inventory_rows, "scheduler": scheduler_rows, "notifier": notifier_rows}
    return Seeded({service: database.url for service, database in databases.items()}, rows, enterprise, partner)


@pytest.fixture
def seeded(db_backend, seeded_databases) -> Seeded:
    return seeded_databases(db_backend)


def _fresh_copy(service: str, backend: str, seeded: Seeded, tmp_path, postgres_database_factory) -> Database:
    template = seeded.urls[service]
    if backend == "postgresql":
        return Database(postgres_database_factory(f"fuzz_{service}", template=make_url(template).database))
    target = tmp_path / f"{service}.db"
    shutil.copyfile(template.removeprefix("sqlite:///"), target)
    return Database(f"sqlite:///{target}")


@pytest.fixture
def service_app(db_backend, seeded, signing_key, tmp_path, postgres_database_factory, monkeypatch):
    """``service_app(name)`` -> that service's app on a fresh copy of its seeded database, the same app
    for every case of the test."""
    monkeypatch.setattr(webhooks, "_resolve", lambda host, port, timeout: ((FAKE_RECEIVER_ADDRESS,), None))
    for service, rows in seeded.rows.items():  # before the first case is drawn
        monkeypatch.setitem(KNOWN_ROWS, service, rows)
    databases: dict[str, Database] = {}
    apps: dict[str, object] = {}

    def app_of(service: str):
        if service not in apps:
            databases[service] = _fresh_copy(service, db_backend, seeded, tmp_path, postgres_database_factory)
            apps[service] = create_app(service, databases[service], signing_key)
        return apps[service]

    yield app_of
    for database in databases.values():
        database.dispose()


@pytest.fixture
def tokens(signing_key, seeded) -> dict[str, dict]:
    """Authorization headers by role: an admin of the institute, an enterprise that owns instruments, a
    partner university."""
    signer = TokenSigner(signing_key)
    organizations = {"admin": None, "enterprise": seeded.enterprise, "partner": seeded.partner}
    return {role: {"Authorization": f"Bearer {signer.issue(f'fuzz-{role}', role, organization)}"}
            for role, organization in organizations.items()}
