"""Operations on the scheduler's database: ``python -m services.scheduler.manage migrate``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy import func, select

from services.scheduler.models import Reservation
from shared.config import Settings
from shared.db import Database
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def prepare_database(database: Database) -> None:
    """Bring the schema up to date (Alembic, head)."""
    upgrade(database, MIGRATIONS)


def prepare(settings: Settings, load_demo: bool) -> str:
    """Migrate; with ``load_demo`` and no reservations yet, ask the worker to make the sample bookings
    (it can only do so once the inventory's sample standards have reached its read model)."""
    database = Database(settings.database_url)
    try:
        prepare_database(database)
        with database.Session() as session:
            empty = not session.scalar(select(func.count()).select_from(Reservation))
    finally:
        database.dispose()
    if load_demo and empty:
        os.environ["REFSTD_SAMPLE_BOOKINGS"] = "1"
        return "migrated; the worker makes the sample bookings once the sample standards arrive"
    return "migrated"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "migrate"
    if command != "migrate":
        print(f"unknown command {command!r}; use migrate", file=sys.stderr)
        return 2
    print(prepare(Settings("scheduler"), load_demo=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
