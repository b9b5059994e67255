"""Alembic environment of the scheduler: the engine comes from shared.migrations (or the URL)."""

from alembic import context

from services.scheduler.models import Base
from shared.config import Settings
from shared.db import make_engine

config = context.config
engine = config.attributes.get("engine") or make_engine(Settings("scheduler").database_url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
