"""Each service's Alembic history builds exactly the schema its models describe, on both databases."""

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import Database

SERVICES = ("inventory", "scheduler", "notifier")


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_create_the_schema_the_models_describe(service, db_backend, migrated_database_factory):
    manage = importlib.import_module(f"services.{service}.manage")
    models = importlib.import_module(f"services.{service}.models")
    database = Database(migrated_database_factory(db_backend, service, manage.prepare_database))
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, models.Base.metadata)
    finally:
        database.dispose()
    assert differences == []
