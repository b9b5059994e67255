"""One seeded world per test module and backend: the matrix has hundreds of cases, and a fresh set of
databases and apps per case would take minutes; cases restore what they change instead."""

from __future__ import annotations

import pytest

from shared.db import Database
from tests.integration.authorization.matrix import SERVICES
from tests.integration.authorization.world import PREPARE, Tokens, World, create_apps


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_backend(request):
    """As tests/conftest.py's, but one per module: the world below is built once per backend."""
    return request.param


@pytest.fixture(scope="module")
def databases(db_backend, migrated_database_factory):
    made = {name: Database(migrated_database_factory(db_backend, name, PREPARE[name])) for name in SERVICES}
    yield made
    for database in made.values():
        database.dispose()


@pytest.fixture(scope="module")
def world(databases, signing_key):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTITUTE_TZ", "Asia/Shanghai")
        built = World(create_apps(databases, signing_key), databases, Tokens(signing_key))
        built.seed()
        yield built
