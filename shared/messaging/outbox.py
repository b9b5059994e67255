"""The transactional outbox (architecture.md, rule 1).

A service declares its table with the mixin and writes events through :class:`Outbox` in the same
transaction as the change they report::

    class OutboxMessage(OutboxMixin, Base):
        pass

    outbox = Outbox(OutboxMessage, source="/services/inventory")
    with db.transaction() as session:
        session.add(instrument)
        outbox.add(session, "refstd.inventory.instrument.registered", instrument.id, {...})

The relay (:mod:`shared.messaging.relay`) publishes the rows and marks them sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column

from shared.db import UTCDateTime
from shared.timeutil import utcnow

from .envelope import encode, make_event

#: The name of the partial index of unsent rows (the relay's work list).
UNSENT_INDEX = "ix_outbox_unsent_seq"


class OutboxMixin:
    """Columns of the ``outbox`` table. ``seq`` gives the publishing order."""

    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(255), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        unsent = text("sent_at IS NULL")
        return (Index(UNSENT_INDEX, "seq", postgresql_where=unsent, sqlite_where=unsent),)

    def __repr__(self) -> str:
        state = "sent" if self.sent_at else f"unsent, {self.attempts} attempts"
        return f"<{type(self).__name__} {self.seq} {self.type} {self.event_id} ({state})>"


class Outbox:
    """Writes events of one service (``source``, e.g. ``/services/inventory``) into its outbox."""

    def __init__(self, model: type, source: str) -> None:
        self.model = model
        self.source = source

    def add(self, session: Session, type: str, subject: str | None, data: dict, **event_kwargs: Any) -> dict:
        """Add one event to the caller's transaction (no flush, no commit) and return it.

        ``event_kwargs`` go to :func:`~shared.messaging.envelope.make_event` (``correlation_id``,
        ``id``, ``time``); ``subject`` is stored as text.
        """
        event = make_event(type, self.source, None if subject is None else str(subject), data, **event_kwargs)
        session.add(
            self.model(
                event_id=event["id"],
                type=event["type"],
                subject=event["subject"],
                body=encode(event).decode(),
                created_at=utcnow(),
                attempts=0,
            )
        )
        return event
