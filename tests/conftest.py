"""Fixtures for the real services: a fresh RabbitMQ vhost and fresh PostgreSQL databases per run.

With CI=true a service that cannot be reached fails the run; elsewhere it fails too, with a message
saying how to start it. Nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support import broker_vhost

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def amqp_url():
    """A fresh vhost on the real broker for this test run, deleted afterwards."""
    with broker_vhost(f"refstd-test-{RUN_ID}") as url:
        yield url


def _pg_admin():
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is needed for these tests and {PG_ADMIN_URL} is not reachable ({exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_database_factory():
    """Creates fresh PostgreSQL databases for this run and drops them at the end."""
    created: list[str] = []

    def create(label: str, template: str | None = None) -> str:
        name = f"refstd_test_{RUN_ID}_{label}_{len(created)}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base}/{name}"

    yield create
    with _pg_admin() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request):
    """Every test using a database runs on SQLite and on PostgreSQL."""
    return request.param


@pytest.fixture
def database_url(db_backend, tmp_path, postgres_database_factory, request):
    """An empty database of each kind."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return postgres_database_factory(request.node.name.split("[")[0][:20].lower())


@pytest.fixture(scope="session")
def migrated_database_factory(postgres_database_factory, tmp_path_factory):
    """``make(backend, service, prepare)`` -> URL of an empty database with the service's schema.

    Migrations run once per backend and service. On SQLite each test gets a copy of the migrated
    file; on PostgreSQL each test gets the run's migrated database with every table emptied
    (TRUNCATE is far cheaper than a CREATE DATABASE per test, and leaves no databases to drop).
    """
    from shared.db import Database

    migrated: dict[tuple[str, str], str] = {}

    def make(backend: str, service: str, prepare) -> str:
        key = (backend, service)
        if key not in migrated:
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path_factory.mktemp('templates') / (service + '.db')}"
            else:
                url = postgres_database_factory(service)
            database = Database(url)
            prepare(database)
            database.dispose()
            migrated[key] = url
            if backend == "postgresql":
                return url
        url = migrated[key]
        if backend == "sqlite":
            target = tmp_path_factory.mktemp(service) / f"{service}.db"
            shutil.copyfile(url.removeprefix("sqlite:///"), target)
            return f"sqlite:///{target}"
        _empty_postgres_database(url)
        return url

    return make


def _empty_postgres_database(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        # A connection a previous test leaked in a transaction would block TRUNCATE: end it.
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")


@pytest.fixture
def postgres_url(postgres_database_factory, request):
    """An empty PostgreSQL database, for tests about PostgreSQL-only behaviour (SKIP LOCKED)."""
    return postgres_database_factory(request.node.name.split("[")[0][:20].lower())


# -- tokens -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def signing_key():
    """The token issuer's key for this run: the inventory app signs with it, the others verify with it."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def signing_key_pem(signing_key) -> str:
    from shared.auth import private_pem

    return private_pem(signing_key)


@pytest.fixture
def token_for(signing_key):
    """``token_for("partner", org_id)`` -> Authorization headers for a client of that role."""
    from shared.auth import TokenSigner

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
def client(app):
    return app.test_client()

