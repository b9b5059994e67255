"""Helpers shared by the tests of every service."""

from __future__ import annotations

import json

from sqlalchemy import select


def read_outbox(database, model, type_suffix: str | None = None) -> list[dict]:
    """The events a service recorded so far, oldest first, as decoded envelopes."""
    with database.Session() as session:
        rows = session.scalars(select(model).order_by(model.seq)).all()
    events = [json.loads(row.body) for row in rows]
    return [e for e in events if e["type"].endswith(type_suffix)] if type_suffix else events
