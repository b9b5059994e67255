"""The due sweep: turns due dates into notices, each (item, due date, lead) once, ever.

Set-based. For each kind and each of its windows (``domain.notices.kind_windows``) one
``SELECT ... FROM tracked_items WHERE item_kind = :k AND due_on BETWEEN :a AND :b AND active AND NOT EXISTS
(the key in notice_keys)`` finds the items entering a window whose key was never noticed (an index range
on ``ix_tracked_items_kind_due`` plus a primary-key probe each; never a loop over every item). They are
grouped into one recalibration event per recipient (and one certificate event per custodian;
``domain.notices.group_notices``), the events are written to the outbox in bulk, and the
keys are inserted in bulk with this sweep's id and the id of the event that carried each (COPY on
PostgreSQL; ``INSERT ... ON CONFLICT DO NOTHING`` with a count check on SQLite), all in the caller's
transaction. A dry run is the same selection without the writes, so it shows exactly what the sweep
would send. Selecting first and writing the keys with their event ids costs one pass over the noticed
keys; claiming them first would need a second pass to record which event carried each.

Concurrency: on PostgreSQL the sweep first takes a transaction-level advisory lock, so sweeps of several
replicas run one after the other and a later one finds every key taken; on SQLite writers are serialised
by ``BEGIN IMMEDIATE`` already. Should a key be taken anyway (a writer outside this module), the sweep
fails and its transaction rolls back: nothing is ever noticed twice.

Cost: a sweep noticing 50,000 keys writes some 10,000 events (25 MB of JSON), and Python, not the
database, is what it waits for. So on PostgreSQL the rows are read as plain psycopg tuples and the
organizations as one JSON document, the count of active items runs while Python groups (pipeline mode),
the events are encoded by one prebuilt encoder while a binary COPY stores the previous ones, the keys go
in by binary COPY in primary-key order, and the garbage collector rests meanwhile. SQLite takes the plain
SQLAlchemy path; both give the same keys and the same events (tests/integration/scheduler/
test_sweep_fast_paths.py).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import psycopg
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


def _count_active_query():
    return select(func.count()).select_from(TrackedItem).where(TrackedItem.active == true())


def _id_in(column, ids: list[str], session: Session):
    """``column IN (ids)``, the ids sent as one JSON array (thousands of bound parameters cost more)."""
    if _is_postgres(session):
        values = "SELECT json_array_elements_text(CAST(:ids AS json))"
    else:
        values = "SELECT value FROM json_each(:ids)"
    return column.in_(text(values).bindparams(ids=json.dumps(ids)))


#: Every organization asked for as one JSON array of ``[id, name, name_en, contacts]``: parsed in one
#: go, where psycopg would parse each row's contacts on its own (slower than the query itself once there
#: are thousands of organizations).
_ORGANIZATIONS_AS_JSON = text(
    "SELECT CAST(json_agg(json_build_array(id, name, name_en, contacts)) AS text) "
    "FROM known_organizations WHERE id IN (SELECT json_array_elements_text(CAST(:ids AS json)))"
)


def _organizations(session: Session, ids: list[str]) -> dict[str, dict]:
    """id -> {name, name_en, contacts} of those of ``ids`` the read model knows."""
    if _is_postgres(session):
        found = session.scalar(_ORGANIZATIONS_AS_JSON, {"ids": json.dumps(ids)})
        rows = json.loads(found) if found else []
    else:
        rows = session.execute(
            select(KnownOrganization.id, KnownOrganization.name, KnownOrganization.name_en,
                   KnownOrganization.contacts)
            .where(_id_in(KnownOrganization.id, ids, session)))
    return {id_: {"name": name, "name_en": name_en, "contacts": contacts}
            for id_, name, name_en, contacts in rows}


def _recipients(session: Session, items: list) -> tuple[dict, dict]:
    """The organizations and standard names the notices of ``items`` mention."""
    organization_ids = sorted({item["organization_id"] for item in items if item["organization_id"]})
    standard_ids = sorted({item["standard_id"] for item in items if item["standard_id"]})
    organizations = _organizations(session, organization_ids) if organization_ids else {}
    standard_names: dict[str, str] = {}
    if standard_ids:
        query = (select(KnownStandard.id, KnownStandard.name)
                 .where(_id_in(KnownStandard.id, standard_ids, session)))
        standard_names = dict(session.execute(query).all())
    return organizations, standard_names


def _group_and_count(session: Session, items: list, as_of: dt.date) -> tuple[list[rules.Notice], int]:
    """The notices of ``items``, and how many items are active (the sweep's ``items_scanned``).

    The count scans every tracked item, a good part of the sweep's time in the database. On PostgreSQL
    it is sent in pipeline mode before the grouping and read after it, so the server counts while
    Python groups; the grouping itself does not touch the database.
    """
    organizations, standard_names = _recipients(session, items)

    def group() -> list[rules.Notice]:
        return rules.group_notices(items, as_of=as_of, organizations=organizations,
                                   standard_names=standard_names)

    if not (_is_postgres(session) and psycopg.capabilities.has_pipeline()):
        return group(), session.scalar(_count_active_query())
    sql, params = _compiled(session, _count_active_query())
    connection = _driver(session)
    with connection.pipeline(), connection.cursor() as cursor:
        cursor.execute(sql, params)  # sent now, answered when fetched
        notices = group()
        (count,) = cursor.fetchone()
    return notices, count


def _as_dict(notice: rules.Notice) -> dict:
    return {"type": events.PREFIX + notice.type, "subject": notice.subject, **notice.data}


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _driver(session: Session):
    """The psycopg connection under the session, inside the session's transaction."""
    return session.connection().connection.driver_connection


def _dicts(session: Session, query) -> list[dict]:
    """The rows of a Core ``query`` as dicts (column name -> value), in the caller's transaction.

    On PostgreSQL the compiled statement runs on the psycopg cursor and the dicts are built from its
    plain tuples: psycopg already returns the types these columns need (str, date, bool), and
    SQLAlchemy's row objects would cost more than reading the rows. Elsewhere (SQLite keeps dates as
    text) the rows go through SQLAlchemy's result processing.
    """
    if session.autoflush:
        session.flush()  # as session.execute would
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return [dict(row) for row in connection.execute(query).mappings()]
    with _driver(session).cursor() as cursor:
        rows = cursor.execute(*_compiled(session, query)).fetchall()
        names = [column.name for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _compiled(session: Session, query) -> tuple[str, dict]:
    """``query`` as the SQL text and parameters the session's DBAPI driver takes."""
    compiled = query.compile(dialect=session.get_bind().dialect)
    return str(compiled), compiled.params


def _candidate_query(kind: str, window: rules.Window):
    noticed = exists().where(
        NoticeKey.item_kind == TrackedItem.item_kind, NoticeKey.item_id == TrackedItem.item_id,
        NoticeKey.due_on == _key_due_on(), NoticeKey.lead == window.lead,
    )
    return select(literal(window.lead, String).label("lead"), *ITEM_COLUMNS).where(
        _in_window(kind, window), ~noticed)


def _candidates(session: Session, as_of: dt.date, policy: dict) -> list[dict]:
    """The items whose current key was never noticed, each with the ``lead`` it is noticed at."""
    items: list[dict] = []
    for kind, window in _windows(policy, as_of):
        items.extend(_dicts(session, _candidate_query(kind, window)))
    return items


def _iso_date(value: Any) -> str:
    if type(value) is dt.date:
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is left to the envelope's encoder")


#: ``shared.messaging.envelope.encode`` with the same settings, built once instead of per event, and
#: turning dates (the only values in a notice that JSON has no type for) straight into ISO strings.
_NOTICE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_iso_date)


def _body(event: dict) -> str:
    """The outbox body of a notice event: exactly ``encode(event)``, as text (the column's type)."""
    try:
        return _NOTICE_ENCODER.encode(event)
    except TypeError:  # a value _iso_date leaves alone: the envelope's own encoder decides
        return encode(event).decode()


def _outbox_rows(notices: list[rules.Notice], now: dt.datetime) -> Iterator[tuple]:
    for notice in notices:
        event = make_event(events.PREFIX + notice.type, events.SOURCE, notice.subject, notice.data, time=now)
        yield event["id"], event["type"], event["subject"], _body(event), now, 0


OUTBOX_COLUMNS = ("event_id", "type", "subject", "body", "created_at", "attempts")
KEY_COLUMNS = ("item_kind", "item_id", "due_on", "lead", "sweep_id", "event_id", "created_at")

#: PostgreSQL types of those columns, for binary COPY: the rows go out as psycopg dumps them, with no
#: text escaping of the outbox bodies (tens of MB) on the way. A mismatch fails the COPY, never silently.
_COPY_TYPES = {
    events.outbox.model.__tablename__: ("varchar", "varchar", "varchar", "text", "timestamptz", "int4"),
    NoticeKey.__tablename__: ("varchar", "varchar", "date", "varchar", "varchar", "varchar", "timestamptz"),
}


def _copy_rows(session: Session, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    """COPY ``rows`` into ``table`` (PostgreSQL) while they are produced: the server stores them while
    Python builds the next ones."""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with _driver(session).cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(_COPY_TYPES[table])
        for row in rows:
            copy.write_row(row)


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
    event_ids = []
    if _is_postgres(session):
        def rows_noting_ids() -> Iterator[tuple]:
            for row in _outbox_rows(notices, now):
                event_ids.append(row[0])
                yield row

        _copy_rows(session, table.name, OUTBOX_COLUMNS, rows_noting_ids())
    else:
        rows = [dict(zip(OUTBOX_COLUMNS, row, strict=True)) for row in _outbox_rows(notices, now)]
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
    if _is_postgres(session):
        # COPY: the cheapest bulk insert. A key already there fails it (no ON CONFLICT), as it must.
        # Sorted by item id (the primary key's order within a kind), the index takes them page by page:
        # a quarter less time in the database than in the order of the notices.
        keys.sort(key=itemgetter(1))
        try:
            _copy_rows(session, NoticeKey.__tablename__, KEY_COLUMNS, keys)
        except psycopg.errors.UniqueViolation as exc:
            raise SweepConflict(f"a notice key was already recorded ({exc}); "
                                "the sweep is rolled back") from exc
        return len(keys)
    result = session.execute(sqlite.insert(NoticeKey.__table__).on_conflict_do_nothing(),
                             [dict(zip(KEY_COLUMNS, key, strict=True)) for key in keys])
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


class _CollectorPause:
    """``with _collector_paused:`` pauses Python's cyclic garbage collector for the block.

    A sweep allocates hundreds of thousands of containers (rows, items, payloads, events) that hold no
    reference cycles and mostly live until it returns: the collector would traverse them again and
    again to find nothing (0.5 s, some 15 % of the sweep's Python time, at 50,000 keys). Reference
    counting still frees everything as usual. Concurrent sweeps share one pause: the collector resumes when the last
    one ends, and only if it was on before the first began.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._resume:
                gc.enable()


_collector_paused = _CollectorPause()


def dry_run_sweep(session: Session, *, as_of: dt.date, policy: dict) -> SweepResult:
    """The notices a sweep on ``as_of`` would emit, computed without writing anything."""
    with _collector_paused:
        notices, items_scanned = _group_and_count(session, _candidates(session, as_of, policy), as_of)
        return SweepResult(items_scanned=items_scanned, notices_emitted=0,
                           notices=[_as_dict(notice) for notice in notices], as_of=as_of, dry_run=True)


def run_sweep(session: Session, *, as_of: dt.date, policy: dict, dry_run: bool = False,
              trigger: str = "api") -> SweepResult:
    """Emit the notices due on ``as_of`` in the caller's transaction (the caller commits).

    ``items_scanned``: active tracked items considered; ``notices_emitted``: events written.

    :raises SweepConflict: a key was recorded by a writer that bypassed the sweep lock (roll back).
    """
    if dry_run:
        return dry_run_sweep(session, as_of=as_of, policy=policy)
    with _collector_paused:
        return _sweep(session, as_of, policy, trigger)


def _sweep(session: Session, as_of: dt.date, policy: dict, trigger: str) -> SweepResult:
    if _is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY})
    started_at = utcnow()
    sweep_id = str(uuid.uuid4())
    notices, items_scanned = _group_and_count(session, _candidates(session, as_of, policy), as_of)
    event_ids = _write_events(session, notices)
    keys = _record_keys(session, sweep_id, notices, event_ids, started_at)

    result = SweepResult(items_scanned=items_scanned, notices_emitted=len(event_ids),
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
