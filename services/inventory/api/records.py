"""Records are history (domain.md rule 7): calibrations, checks and verifications are appended, never
edited; a correction is a new record whose ``corrects_id`` names the record it corrects.

What the record endpoints share: which record is in force, whether a correction may name a record, and
reading one record of its parent.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.errors import not_found
from shared.web import find_by_id

Record = TypeVar("Record")


def record_in_force(session: Session, model: type[Record], parent: InstrumentedAttribute, parent_id: str,
                    dated: InstrumentedAttribute) -> Record | None:
    """The parent's record in force: the latest by its date (``dated``) among those no record corrects.

    A correction replaces the effect of the record it names; a record entered late for an earlier date
    does not displace a later one. Same date: the one recorded last wins.
    """
    corrected = select(model.corrects_id).where(parent == parent_id, model.corrects_id.is_not(None))
    return session.scalar(
        select(model)
        .where(parent == parent_id, model.id.not_in(corrected))
        .order_by(dated.desc(), model.created_at.desc(), model.id.desc())
        .limit(1)
    )


def correction_problem(session: Session, model: type, parent: InstrumentedAttribute, parent_id: str,
                       corrects_id: Any, what: str) -> str | None:
    """Why ``corrects_id`` cannot be corrected by a new record of this parent, or None.

    It must name a record (``what``, e.g. "calibration record of this equipment") of the same parent that
    no record corrects yet: a record is corrected once, and a later correction corrects the correction.
    """
    corrected = find_by_id(session, model, corrects_id)
    if corrected is None or getattr(corrected, parent.key) != parent_id:
        return f"must name a {what}."
    correction = session.scalar(select(model.id).where(model.corrects_id == corrected.id))
    if correction is not None:
        return f"that record was already corrected by {correction}; correct that record instead."
    return None


def record_or_404(session: Session, model: type[Record], record_id: str, parent: InstrumentedAttribute,
                  parent_id: str, what: str) -> Record:
    """One record of this parent; a record of another parent is 404 like a missing one."""
    record = find_by_id(session, model, record_id)
    if record is None or getattr(record, parent.key) != parent_id:
        not_found(what)
    return record
