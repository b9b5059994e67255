"""Operations on the scheduler's database: ``python -m services.scheduler.manage migrate``."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.config import Settings
from shared.db import Database
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def prepare_database(database: Database) -> None:
    """Bring the schema up to date (Alembic, head)."""
    upgrade(database, MIGRATIONS)


def prepare(settings: Settings, load_demo: bool) -> str:
    database = Database(settings.database_url)
    try:
        prepare_database(database)
        return "migrated"
    finally:
        database.dispose()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "migrate"
    if command != "migrate":
        print(f"unknown command {command!r}; use migrate", file=sys.stderr)
        return 2
    print(prepare(Settings("scheduler"), load_demo=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
