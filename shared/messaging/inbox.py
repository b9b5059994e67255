"""The inbox: which messages a consumer has processed (architecture.md, rule 4).

A service declares ``class InboxMessage(InboxMixin, Base): pass``. The consumer claims
``(message_id, consumer)`` in the same transaction as the handler's work; a message that was
already claimed (and committed) is a duplicate.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db import UTCDateTime
from shared.timeutil import utcnow


class InboxMixin:
    """Columns of the ``inbox`` table: primary key ``(message_id, consumer)``."""

    __tablename__ = "inbox"

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.consumer} {self.message_id}>"


def claim(session: Session, model: type, message_id: str, consumer: str) -> bool:
    """Record the message as processed by ``consumer``, inside the caller's transaction.

    True the first time; False if the pair is already there (a duplicate). On PostgreSQL a
    concurrent claim of the same pair waits for the first transaction and then returns False (or
    True if that one rolled back); on SQLite writers are serialised anyway.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise NotImplementedError(f"inbox claim is not implemented for {dialect}")
    statement = (
        insert(model)
        .values(message_id=message_id, consumer=consumer, processed_at=utcnow())
        .on_conflict_do_nothing(index_elements=["message_id", "consumer"])
        .returning(model.message_id)
    )
    # RETURNING gives a row only if one was inserted (rowcount is not reliable for this with
    # every driver: psycopg through SQLAlchemy reports -1).
    return session.execute(statement).first() is not None
