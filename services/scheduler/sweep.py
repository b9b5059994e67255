"""The due sweep: turns due dates into notices, each (item, due date, lead) once, ever.

Set-based. For each kind and each of its windows (``domain.notices.kind_windows``) one
``SELECT ... FROM tracked_items WHERE item_kind = :k AND due_on BETWEEN :a AND :b AND active AND NOT EXISTS
(the key in notice_keys)`` finds the items entering a window whose key was never noticed (an index range
on ``ix_tracked_items_kind_due`` plus a primary-key probe each; never a loop over every item). They are
grouped into one event per recipient and type, the events are written to the outbox in bulk, and the
keys are inserted in bulk with this sweep's id and the id of the event that carried each (COPY on
PostgreSQL; ``INSERT ... ON CONFLICT DO NOTHING`` with a count check on SQLite), all in the caller's
transaction. A dry run is the same selection without the writes, so it shows exactly what the sweep
would send. Selecting first and writing the keys with their event ids costs one pass over the noticed
keys; claiming them first would need a second pass to record which event carried each.

Concurrency: on PostgreSQL the sweep first takes a transaction-level advisory lock, so sweeps of several
replicas run one after the other and a later one finds every key taken; on SQLite writers are serialised
by ``BEGIN IMMEDIATE`` already. Should a key be taken anyway (a writer outside this module), the sweep
fails and its transaction rolls back: nothing is ever noticed twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, String, and_, exists, func, literal, or_, select, text, true
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from services.scheduler import events
from services.scheduler.domain import notices as rules
from services.scheduler.models import KnownOrganization, KnownStandard, NoticeKey, SweepRun, TrackedItem
from services.scheduler.policy import load_policy
from shared.config import Settings
from shared.db import Database
from shared.messaging.envelope import encode, make_event
from shared.timeutil import today_in, utcnow

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key of the due sweep (any constant; "refstd" in ASCII).
SWEEP_LOCK_KEY = 0x726566737464

ITEM_COLUMNS = (
    TrackedItem.item_kind, TrackedItem.item_id, TrackedItem.name, TrackedItem.serial_number,
    TrackedItem.category, TrackedItem.regulation, TrackedItem.mandatory, TrackedItem.standard_id,
    TrackedItem.organization_id, TrackedItem.custodian_name, TrackedItem.custodian_email, TrackedItem.due_on,
)


@dataclass
class SweepResult:
    items_scanned: int
    notices_emitted: int
    #: The events written (dry run: that would be written), as ``{type, subject, **NoticeSchema payload}``.
    notices: list[dict] = field(default_factory=list)
    as_of: dt.date | None = None
    dry_run: bool = False
    sweep_id: str | None = None


def _key_due_on():
    return func.coalesce(TrackedItem.due_on, literal(rules.NEVER_CALIBRATED_KEY_DATE, Date))


def _in_window(item_kind: str, window: rules.Window):
    """Index-friendly on (item_kind, due_on): ix_tracked_items_kind_due."""
    due = TrackedItem.due_on.between(window.first_due_on, window.last_due_on)
    if window.includes_never_calibrated:
        due = or_(due, TrackedItem.due_on.is_(None))
    return and_(TrackedItem.item_kind == item_kind, due, TrackedItem.active == true())


def _windows(policy: dict, as_of: dt.date) -> Iterable[tuple[str, rules.Window]]:
    for kind in rules.ITEM_KINDS:
        for window in rules.kind_windows(policy, kind, as_of):
            yield kind, window


def _count_active(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(TrackedItem).where(TrackedItem.active == true()))


def _id_in(column, ids: list[str], session: Session):
    """``column IN (ids)``, the ids sent as one JSON array (thousands of bound parameters cost more)."""
    if _is_postgres(session):
        values = "SELECT json_array_elements_text(CAST(:ids AS json))"
    else:
        values = "SELECT value FROM json_each(:ids)"
    return column.in_(text(values).bindparams(ids=json.dumps(ids)))


def _recipients(session: Session, items: list) -> tuple[dict, dict]:
    """The organizations and standard names the notices of ``items`` mention."""
    organization_ids = sorted({item["organization_id"] for item in items if item["organization_id"]})
    standard_ids = sorted({item["standard_id"] for item in items if item["standard_id"]})
    organizations: dict[str, dict] = {}
    if organization_ids:
        query = (select(KnownOrganization.id, KnownOrganization.name, KnownOrganization.name_en,
                        KnownOrganization.contacts)
                 .where(_id_in(KnownOrganization.id, organization_ids, session)))
        for id_, name, name_en, contacts in session.execute(query):
            organizations[id_] = {"name": name, "name_en": name_en, "contacts": contacts}
    standard_names: dict[str, str] = {}
    if standard_ids:
        query = (select(KnownStandard.id, KnownStandard.name)
                 .where(_id_in(KnownStandard.id, standard_ids, session)))
        standard_names = dict(session.execute(query).all())
    return organizations, standard_names


def _group(session: Session, items: list, as_of: dt.date) -> list[rules.Notice]:
    organizations, standard_names = _recipients(session, items)
    return rules.group_notices(items, as_of=as_of, organizations=organizations, standard_names=standard_names)


def _as_dict(notice: rules.Notice) -> dict:
    return {"type": events.PREFIX + notice.type, "subject": notice.subject, **notice.data}


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _driver(session: Session):
    """The psycopg connection under the session, inside the session's transaction."""
    return session.connection().connection.driver_connection


def _as_dicts(result) -> list[dict]:
    names = list(result.keys())
    return [dict(zip(names, row, strict=True)) for row in result]


def _candidates(session: Session, as_of: dt.date, policy: dict) -> list[dict]:
    """The items whose current key was never noticed, each with the ``lead`` it is noticed at."""
    items: list[dict] = []
    for kind, window in _windows(policy, as_of):
        noticed = exists().where(
            NoticeKey.item_kind == TrackedItem.item_kind, NoticeKey.item_id == TrackedItem.item_id,
            NoticeKey.due_on == _key_due_on(), NoticeKey.lead == window.lead,
        )
        query = select(literal(window.lead, String).label("lead"), *ITEM_COLUMNS).where(
            _in_window(kind, window), ~noticed)
        items.extend(_as_dicts(session.execute(query)))
    return items


def _outbox_rows(notices: list[rules.Notice], now: dt.datetime) -> Iterator[tuple]:
    for notice in notices:
        event = make_event(events.PREFIX + notice.type, events.SOURCE, notice.subject, notice.data, time=now)
        yield event["id"], event["type"], event["subject"], encode(event).decode(), now, 0


def _write_events(session: Session, notices: list[rules.Notice]) -> list[str]:
    """Outbox rows for the notices, written in bulk; returns the event ids, in the order of ``notices``.

    The payloads are built by ``group_notices`` in exactly the shape NoticeSchema dumps (tests check
    that), so they are encoded directly: dumping thousands of nested payloads through marshmallow would
    cost more than the rest of the sweep together. On PostgreSQL the rows stream into a COPY while the
    next ones are encoded, so the database stores them while Python works.
    """
    if not notices:
        return []
    now = utcnow()
    table = events.outbox.model.__table__
    columns = ("event_id", "type", "subject", "body", "created_at", "attempts")
    event_ids = []
    if _is_postgres(session):
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with _driver(session).cursor() as cursor, cursor.copy(statement) as copy:
            for row in _outbox_rows(notices, now):
                copy.write_row(row)
                event_ids.append(row[0])
    else:
        rows = [dict(zip(columns, row, strict=True)) for row in _outbox_rows(notices, now)]
        session.execute(table.insert(), rows)
        event_ids = [row["event_id"] for row in rows]
    return event_ids


class SweepConflict(RuntimeError):
    """A key this sweep was about to record was recorded meanwhile by a writer that bypassed the lock."""


def _record_keys(session: Session, sweep_id: str, notices: list[rules.Notice], event_ids: list[str],
                 now: dt.datetime) -> int:
    """Insert every noticed key with the sweep and the event that carried it; returns how many.

    :raises SweepConflict: a key was already recorded (then nothing of this sweep may be kept).
    """
    keys = [(item["item_kind"], item["item_id"], rules.key_due_on(item["due_on"]), item["lead"], sweep_id,
             event_id, now)
            for notice, event_id in zip(notices, event_ids, strict=True) for item in notice.data["items"]]
    if not keys:
        return 0
    columns = ("item_kind", "item_id", "due_on", "lead", "sweep_id", "event_id", "created_at")
    if _is_postgres(session):
        import psycopg

        # COPY: the cheapest bulk insert. A key already there fails it (no ON CONFLICT), as it must.
        try:
            with _driver(session).cursor() as cursor, cursor.copy(
                    f"COPY {NoticeKey.__tablename__} ({', '.join(columns)}) FROM STDIN") as copy:
                for key in keys:
                    copy.write_row(key)
        except psycopg.errors.UniqueViolation as exc:
            raise SweepConflict(f"a notice key was already recorded ({exc}); "
                                "the sweep is rolled back") from exc
        return len(keys)
    result = session.execute(sqlite.insert(NoticeKey.__table__).on_conflict_do_nothing(),
                             [dict(zip(columns, key, strict=True)) for key in keys])
    if result.rowcount != len(keys):
        raise SweepConflict(f"{len(keys) - result.rowcount} of {len(keys)} notice keys were already "
                            "recorded; the sweep is rolled back")
    return len(keys)


def _cancel_bookings_of_expired_certificates(session: Session, as_of: dt.date) -> int:
    """Standards whose certificate has expired cannot be used: their future bookings are cancelled."""
    try:
        from services.scheduler.bookings import cancel_bookings_of_expired_certificates
    except ImportError:
        log.warning("services.scheduler.bookings.cancel_bookings_of_expired_certificates is not available")
        return 0
    return cancel_bookings_of_expired_certificates(session, as_of)


def dry_run_sweep(session: Session, *, as_of: dt.date, policy: dict) -> SweepResult:
    """The notices a sweep on ``as_of`` would emit, computed without writing anything."""
    notices = _group(session, _candidates(session, as_of, policy), as_of)
    return SweepResult(items_scanned=_count_active(session), notices_emitted=0,
                       notices=[_as_dict(notice) for notice in notices], as_of=as_of, dry_run=True)


def run_sweep(session: Session, *, as_of: dt.date, policy: dict, dry_run: bool = False,
              trigger: str = "api") -> SweepResult:
    """Emit the notices due on ``as_of`` in the caller's transaction (the caller commits).

    ``items_scanned``: active tracked items considered; ``notices_emitted``: events written.

    :raises SweepConflict: a key was recorded by a writer that bypassed the sweep lock (roll back).
    """
    if dry_run:
        return dry_run_sweep(session, as_of=as_of, policy=policy)
    if _is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
    started_at = utcnow()
    sweep_id = str(uuid.uuid4())
    notices = _group(session, _candidates(session, as_of, policy), as_of)
    event_ids = _write_events(session, notices)
    keys = _record_keys(session, sweep_id, notices, event_ids, started_at)

    result = SweepResult(items_scanned=_count_active(session), notices_emitted=len(event_ids),
                         notices=[_as_dict(notice) for notice in notices], as_of=as_of, sweep_id=sweep_id)
    session.add(SweepRun(id=sweep_id, as_of=as_of, trigger=trigger, started_at=started_at,
                         finished_at=utcnow(), items_scanned=result.items_scanned,
                         notices_emitted=result.notices_emitted))
    cancelled = _cancel_bookings_of_expired_certificates(session, as_of)
    log.info("due sweep %s as of %s (%s): %s items, %s keys, %s events, %s bookings cancelled",
             sweep_id, as_of, trigger, result.items_scanned, keys, result.notices_emitted, cancelled)
    return result


def sweep_now(database: Database, settings: Settings, trigger: str = "cron",
              now: dt.datetime | None = None) -> SweepResult:
    """One sweep as of today in the institute's zone, in its own transaction (the worker's daily job)."""
    with database.transaction() as session:
        policy = load_policy(session)
        return run_sweep(session, as_of=today_in(settings.institute_tz, now), policy=policy, trigger=trigger)


def preview(result: SweepResult) -> dict[str, Any]:
    """The result as the HTTP API answers it."""
    body: dict[str, Any] = {"items_scanned": result.items_scanned, "notices_emitted": result.notices_emitted,
                            "as_of": result.as_of, "dry_run": result.dry_run}
    if result.dry_run:
        body["notices"] = result.notices
    return body
