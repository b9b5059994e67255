"""Operations on the inventory's database: ``python -m services.inventory.manage migrate|demo``."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.auth import load_or_create_private_key
from shared.config import Settings
from shared.db import Database
from shared.migrations import upgrade
from shared.timeutil import institute_today

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def prepare_database(database: Database) -> None:
    """Bring the schema up to date (Alembic, head)."""
    upgrade(database, MIGRATIONS)


def load_demo_if_empty(database: Database) -> str:
    from services.inventory import demo

    with database.transaction() as session:
        if not demo.is_empty(session):
            return "database not empty, sample data not loaded"
        counts = demo.load_demo_data(session, institute_today())
    return "sample data loaded: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())


def prepare(settings: Settings, load_demo: bool) -> str:
    # Create the token signing key now, before several web workers start and race for it.
    load_or_create_private_key(settings.jwt_private_key, settings.jwt_private_key_file)
    database = Database(settings.database_url)
    try:
        prepare_database(database)
        return load_demo_if_empty(database) if load_demo else "migrated (DEMO_DATA=0)"
    finally:
        database.dispose()


def main(argv: list[str]) -> int:
    settings = Settings("inventory")
    command = argv[0] if argv else "migrate"
    if command == "migrate":
        print(prepare(settings, load_demo=False))
    elif command == "demo":
        print(prepare(settings, load_demo=True))
    else:
        print(f"unknown command {command!r}; use migrate or demo", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
