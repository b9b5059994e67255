"""Due sweep against the bare SQL statement that writes the same notice keys, measured in the same run.

    .venv/bin/python -m bench.sweep [--items 1000000] [--organizations 10000] [--repeat 3]
                                    [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a fresh PostgreSQL database on that server (dropped afterwards), migrates it, and bulk-loads
(COPY) N enterprise instruments spread over the organizations, plus the organizations' read-model rows.
A share of the items (``--due-share``, 5 % by default) is due inside a notice window on the sweep date
(from 28 days overdue to 30 days ahead: the 0/7/30-day leads and the four overdue reminders); the rest is
due 31 to 730 days ahead. Then, ``--repeat`` times, on an emptied ``notice_keys`` / ``outbox`` each time:

(b) bare: one ``INSERT INTO notice_keys ... SELECT ... FROM tracked_items WHERE ...`` (the lead computed
    by a CASE), committed: the floor for writing those keys;
(a) sweep: ``run_sweep`` — the items entering a window selected (set-based, NOT EXISTS against the
    keys), grouped into one event per organization, outbox rows written, keys written with
    their event ids, sweep run recorded — committed.

Both must write the same set of keys (checked after each run, outside the timings).

Prints a Markdown table of the medians; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
import uuid

from sqlalchemy import func, select, text

from bench.support import POSTGRES_URL, fresh_database
from services.scheduler.domain.notices import notice_windows
from services.scheduler.manage import prepare_database
from services.scheduler.models import NoticeKey, OutboxMessage
from services.scheduler.policy import load_policy
from services.scheduler.sweep import run_sweep
from shared.db import Database

AS_OF = dt.date(2026, 6, 1)
ITEM_COLUMNS = ("item_kind", "item_id", "name", "serial_number", "category", "regulation", "mandatory",
                "organization_id", "due_on", "active", "source_version", "updated_at")


def bulk_load(db: Database, items: int, organizations: int, due_share: float, seed: int) -> int:
    """COPY the organizations and items; returns how many items are due inside a notice window."""
    rng = random.Random(seed)
    org_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(organizations)]
    now = dt.datetime.now(dt.UTC)
    in_window = 0
    raw = db.engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy("COPY known_organizations (id, name, name_en, kind, contacts, source_version) "
                             "FROM STDIN") as copy:
                for n, org_id in enumerate(org_ids):
                    contacts = [{"name": "王工", "email": f"contact{n}@example.com", "locale": "zh-CN"}]
                    copy.write_row((org_id, f"示例企业{n}（示例）", f"Sample enterprise {n}", "enterprise",
                                    json.dumps(contacts, ensure_ascii=False), 1))
            with cursor.copy(f"COPY tracked_items ({', '.join(ITEM_COLUMNS)}) FROM STDIN") as copy:
                for n in range(items):
                    if rng.random() < due_share:
                        days = rng.randint(-28, 30)
                        in_window += 1
                    else:
                        days = rng.randint(31, 730)
                    item_id = f"00000000-0000-4000-8000-{n:012d}"
                    copy.write_row(("instrument", item_id, "一般压力表", f"P-{n:07d}", "pressure gauge",
                                    "JJG 52-2013", True, org_ids[n % organizations],
                                    AS_OF + dt.timedelta(days=days), True, 1, now))
        raw.driver_connection.commit()
        with raw.driver_connection.cursor() as cursor:
            raw.driver_connection.autocommit = True
            cursor.execute("VACUUM ANALYZE tracked_items")
            cursor.execute("VACUUM ANALYZE known_organizations")
    finally:
        raw.close()
    return in_window


def bare_statement(policy: dict) -> tuple[str, dict]:
    """One INSERT ... SELECT writing exactly the keys the sweep writes for instruments."""
    windows = notice_windows(policy["instrument_lead_days"], policy["overdue_repeat_days"],
                             policy["overdue_max_notices"], AS_OF)
    params: dict = {"first": min(w.first_due_on for w in windows),
                    "last": max(w.last_due_on for w in windows)}
    cases = []
    for n, window in enumerate(windows):
        params.update({f"a{n}": window.first_due_on, f"b{n}": window.last_due_on, f"l{n}": window.lead})
        cases.append(f"WHEN due_on BETWEEN :a{n} AND :b{n} THEN :l{n}")
    sql = (
        "INSERT INTO notice_keys (item_kind, item_id, due_on, lead, sweep_id, created_at) "
        f"SELECT item_kind, item_id, due_on, CASE {' '.join(cases)} END, 'bare', now() FROM tracked_items "
        "WHERE item_kind = 'instrument' AND active AND due_on BETWEEN :first AND :last "
        "ON CONFLICT DO NOTHING"
    )
    return sql, params


def empty_notices(db: Database) -> None:
    with db.transaction() as session:
        session.execute(text("TRUNCATE notice_keys, outbox, sweep_runs"))


def counts(db: Database) -> tuple[int, int]:
    with db.Session() as session:
        return (session.scalar(select(func.count()).select_from(NoticeKey)),
                session.scalar(select(func.count()).select_from(OutboxMessage)))


def noticed_keys(db: Database) -> set[tuple]:
    """The keys written, without who wrote them (the bare statement and the sweep must write the same)."""
    with db.Session() as session:
        return set(session.execute(select(NoticeKey.item_kind, NoticeKey.item_id, NoticeKey.due_on,
                                          NoticeKey.lead)).all())


def measure_bare(db: Database, policy: dict) -> tuple[float, int]:
    sql, params = bare_statement(policy)
    started = time.perf_counter()
    with db.transaction() as session:
        session.execute(text(sql), params)
    elapsed = time.perf_counter() - started
    return elapsed, counts(db)[0]


def measure_sweep(db: Database) -> tuple[float, int, int]:
    started = time.perf_counter()
    with db.transaction() as session:
        result = run_sweep(session, as_of=AS_OF, policy=load_policy(session), trigger="bench")
    elapsed = time.perf_counter() - started
    keys, events = counts(db)
    if events != result.notices_emitted:
        raise SystemExit(f"the sweep reported {result.notices_emitted} events but wrote {events}")
    return elapsed, keys, events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--organizations", type=int, default=10_000)
    parser.add_argument("--due-share", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20260601)
    parser.add_argument("--database-url", default=POSTGRES_URL,
                        help="a PostgreSQL server URL (a fresh database is created on it and dropped)")
    args = parser.parse_args(argv)

    url, drop = fresh_database(args.database_url, "sweep")
    db = Database(url)
    try:
        prepare_database(db)
        started = time.perf_counter()
        in_window = bulk_load(db, args.items, args.organizations, args.due_share, args.seed)
        load_seconds = time.perf_counter() - started
        with db.Session() as session:
            policy = load_policy(session)
        bare_runs, sweep_runs = [], []
        for _ in range(args.repeat):
            empty_notices(db)
            seconds, bare_keys = measure_bare(db, policy)
            bare_runs.append(seconds)
            written_by_bare = noticed_keys(db)
            empty_notices(db)
            seconds, sweep_keys, events = measure_sweep(db)
            sweep_runs.append(seconds)
            if not bare_keys == sweep_keys == in_window:
                raise SystemExit(f"keys differ: bare {bare_keys}, sweep {sweep_keys}, "
                                 f"due in a window {in_window}")
            if noticed_keys(db) != written_by_bare:
                raise SystemExit("the bare statement and the sweep wrote different keys")
    finally:
        db.dispose()
        drop()

    bare, sweep = statistics.median(bare_runs), statistics.median(sweep_runs)
    print(f"Due sweep: {args.items:,} tracked items, {args.organizations:,} organizations, "
          f"{in_window:,} due inside a notice window; PostgreSQL; median of {args.repeat} "
          f"(bulk load {load_seconds:.1f} s)\n")
    print("| measure | seconds | keys written | events written |")
    print("|---|---:|---:|---:|")
    print(f"| (b) bare `INSERT INTO notice_keys ... SELECT ... FROM tracked_items` | {bare:.2f} | "
          f"{bare_keys:,} | - |")
    print(f"| (a) `run_sweep` (select, group, outbox rows, keys with event ids, sweep run) | {sweep:.2f} | "
          f"{sweep_keys:,} | {events:,} |")
    print(f"| **sweep / bare** | **{sweep / bare:.2f}** | | |")
    print(f"\nruns (s): bare {', '.join(f'{s:.2f}' for s in bare_runs)}; "
          f"sweep {', '.join(f'{s:.2f}' for s in sweep_runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
