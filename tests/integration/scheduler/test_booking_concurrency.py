"""Concurrent booking requests against a real HTTP server (werkzeug, one thread per request) on SQLite and
PostgreSQL: of requests for overlapping time exactly one wins, and the database holds exactly one."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select, text
from werkzeug.serving import make_server

from services.scheduler import bookings as service
from services.scheduler.models import OutboxMessage, Reservation
from tests.integration.scheduler import payloads

NOW = dt.datetime(2031, 3, 2, 1, 0, tzinfo=dt.UTC)
REQUESTS = 50


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(service, "clock", lambda: NOW)


@pytest.fixture
def server(app):
    """The scheduler served over real sockets, a thread per request; yields its base URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def make_standard(deliver):
    def make(recovery_minutes: int) -> dict:
        data = payloads.standard(recovery_minutes=recovery_minutes, certificate_expires_on=dt.date(2034, 1, 1))
        deliver("standard.registered", data)
        return data

    return make


@pytest.fixture
def tokens(token_for, deliver):
    """Alternating lab staff and partner clients (each partner of its own university)."""
    headers = []
    for i in range(REQUESTS):
        if i % 2:
            organization = payloads.organization(name=f"大学 {i}", kind="university")
            deliver("organization.registered", organization)
            headers.append(token_for("partner", organization["id"], client_id=f"partner-{i}"))
        else:
            headers.append(token_for("lab_staff", client_id=f"lab-{i}"))
    return headers


def fire(base_url: str, bodies: list[dict], headers: list[dict]) -> list[requests.Response]:
    """POST every body at once: each from its own thread and connection, released together."""
    start = threading.Barrier(len(bodies))

    def post(i: int) -> requests.Response:
        with requests.Session() as session:
            start.wait(timeout=30)
            return session.post(f"{base_url}/api/v1/bookings", json=bodies[i], headers=headers[i], timeout=120)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, range(len(bodies))))


def active_bookings(scheduler_db) -> list[Reservation]:
    with scheduler_db.Session() as session:
        return list(session.scalars(select(Reservation).where(Reservation.status.in_(("pending", "confirmed")))))


def booking_events(scheduler_db) -> int:
    with scheduler_db.Session() as session:
        return len(session.scalars(select(OutboxMessage).where(OutboxMessage.type.like("%.booking.%"))).all())


def test_of_fifty_overlapping_requests_exactly_one_wins(server, scheduler_db, make_standard, tokens):
    standard = make_standard(recovery_minutes=30)
    start = dt.datetime(2031, 3, 3, 1, 0, tzinfo=dt.UTC)
    # Request i asks for [09:00 + i min, 10:30 + i min) Shanghai time: every pair overlaps.
    bodies = [{"standard_id": standard["id"], "purpose": f"请求 {i}",
               "starts_at": (start + dt.timedelta(minutes=i)).isoformat(),
               "ends_at": (start + dt.timedelta(minutes=90 + i)).isoformat()} for i in range(REQUESTS)]

    responses = fire(server, bodies, tokens)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (REQUESTS - 1), statuses
    [winner] = [r.json() for r in responses if r.status_code == 201]
    for response in responses:
        if response.status_code == 409:
            body = response.json()
            assert body["code"] == "booking_conflict"
            assert [c["id"] for c in body["conflicts"]] == [winner["id"]]
    [row] = active_bookings(scheduler_db)
    assert row.id == winner["id"]
    assert booking_events(scheduler_db) == 1


def test_fifty_back_to_back_requests_all_succeed(server, scheduler_db, make_standard, tokens):
    standard = make_standard(recovery_minutes=10)
    start = dt.datetime(2031, 3, 3, 1, 0, tzinfo=dt.UTC)
    # Each booking plus its recovery ends exactly where the next one starts: no conflict at all.
    bodies = [{"standard_id": standard["id"],
               "starts_at": (start + dt.timedelta(minutes=30 * i)).isoformat(),
               "ends_at": (start + dt.timedelta(minutes=30 * i + 20)).isoformat()} for i in range(REQUESTS)]

    responses = fire(server, bodies, tokens)

    assert [r.status_code for r in responses] == [201] * REQUESTS, [r.text for r in responses if r.status_code != 201]
    assert len(active_bookings(scheduler_db)) == REQUESTS
    assert booking_events(scheduler_db) == REQUESTS


def _wait_until_someone_waits_for_a_lock(scheduler_db) -> None:
    """PostgreSQL: return once another connection is blocked on a lock (bounded, then fail)."""
    done = threading.Event()
    with scheduler_db.engine.connect() as connection:
        for _ in range(1000):
            waiting = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            connection.rollback()
            if waiting:
                return
            done.wait(0.01)
    pytest.fail("the status change never waited for the approval's locks")


def test_an_approval_and_a_status_change_at_once_neither_deadlock_nor_leave_a_booking(
        client, token_for, scheduler_db, make_standard, deliver, tokens):
    standard = make_standard(recovery_minutes=0)
    response = client.post("/api/v1/bookings", headers=tokens[1], json={
        "standard_id": standard["id"], "starts_at": "2031-03-03T09:00:00+08:00",
        "ends_at": "2031-03-03T10:00:00+08:00"})
    booking_id = response.get_json()["id"]
    approver = service.Caller("lab-approver", "lab_staff")
    outcome = {}

    def status_change():
        try:
            deliver("standard.status_changed", payloads.standard(
                id=standard["id"], status="suspended", version=2, certificate_expires_on=dt.date(2034, 1, 1)))
            outcome["handled"] = True
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    with scheduler_db.Session() as session:
        booking = service.lock_reservation(session, booking_id, "booking")
        handler = threading.Thread(target=status_change)
        handler.start()
        if scheduler_db.is_postgres:
            _wait_until_someone_waits_for_a_lock(scheduler_db)
        service.approve(session, booking, approver, NOW)
        session.commit()
    handler.join(timeout=60)

    assert outcome == {"handled": True}
    [row] = [r for r in _all(scheduler_db) if r.id == booking_id]
    assert (row.status, row.reason, row.sequence) == ("cancelled", "standard_unavailable", 2)
    with scheduler_db.Session() as session:
        types = [m.type for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.seq))]
    assert types[-2:] == ["refstd.scheduler.booking.confirmed", "refstd.scheduler.booking.cancelled"]


def _all(scheduler_db) -> list[Reservation]:
    with scheduler_db.Session() as session:
        return list(session.scalars(select(Reservation)))
