"""Alembic, driven from code: each service keeps its own migration history next to its models."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.db import Database


def alembic_config(script_location: Path, database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["engine"] = database.engine
    return config


def upgrade(database: Database, script_location: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, database), revision)
