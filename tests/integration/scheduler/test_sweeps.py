"""The due sweep on a read model built from inventory events: one recalibration event per recipient (and
one certificate event per custodian), each (item, due date, lead) once, ever — across repeated, later,
concurrent and dry-run sweeps."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from sqlalchemy import func, select

from services.scheduler import bookings
from services.scheduler import sweep as sweep_module
from services.scheduler.domain.notices import INSTITUTE_NAME
from services.scheduler.models import NoticeKey, OutboxMessage, SweepRun, TrackedItem
from services.scheduler.policy import load_policy
from services.scheduler.sweep import SweepConflict, run_sweep, sweep_now
from shared.config import Settings
from shared.timeutil import institute_today

from . import payloads

AS_OF = dt.date(2026, 3, 2)


def day(offset: int, base: dt.date = AS_OF) -> dt.date:
    return base + dt.timedelta(days=offset)


def sweep(db, as_of: dt.date = AS_OF, dry_run: bool = False, policy: dict | None = None):
    with db.transaction() as session:
        return run_sweep(session, as_of=as_of, policy=policy or load_policy(session), dry_run=dry_run)


def count(db, model) -> int:
    with db.Session() as session:
        return session.scalar(select(func.count()).select_from(model))


def organization(deliver, name: str = "淄博示例氢源新材料有限公司", **fields) -> str:
    data = payloads.organization(name=name, **fields)
    deliver("organization.registered", data)
    return data["id"]


def instrument(deliver, organization_id: str, due_on: dt.date, *, id: str | None = None, version: int = 1,
               suffix: str = "registered", **fields) -> dict:
    data = payloads.instrument(organization_id=organization_id, due_on=due_on, id=id, version=version,
                               **fields)
    deliver(f"instrument.{suffix}", data)
    return data


def standard(deliver, *, certificate_expires_on: dt.date, equipment: list[tuple[str, dt.date | None]] = (),
             custodian_email: str = "li@example.com", name: str = "气体流量标准装置") -> dict:
    """A standard with equipment [(name, due_on)], registered with its state (as the inventory publishes)."""
    parts = [{"id": str(uuid.uuid4()), "name": part, "version": 1, "serial_number": f"SN-{n}",
              "due_on": due_on.isoformat() if due_on else None} for n, (part, due_on) in enumerate(equipment)]
    data = payloads.standard(certificate_expires_on=certificate_expires_on, equipment=parts,
                             custodian_email=custodian_email, name=name)
    deliver("standard.registered", data)
    return data


def notices_by(outbox, type_suffix: str | None = None) -> dict:
    """(type suffix, subject) -> event data, of every notice event in the outbox."""
    found = {}
    for event in outbox(type_suffix):
        key = (event["type"].removeprefix("refstd.scheduler."), event["subject"])
        assert key not in found, f"two events for {key}"
        found[key] = event["data"]
    return found


def listed(data: dict) -> list[tuple[str, str]]:
    return [(item["name"], item["lead"]) for item in data["items"]]


# -- one event per recipient ------------------------------------------------------------------------

def test_first_sweep_sends_one_event_per_recipient_with_the_right_items(scheduler_db, deliver, outbox):
    org_a = organization(deliver, contacts=[{"name": "王工", "email": "wang@example.com", "locale": "zh-CN"}])
    org_b = organization(deliver, name="示例膜科技（淄博）有限公司")
    instrument(deliver, org_a, day(20), name="a-30")
    instrument(deliver, org_a, day(5), name="a-7")
    instrument(deliver, org_a, day(-3), name="a-overdue")
    instrument(deliver, org_a, day(100), name="a-far")
    instrument(deliver, org_b, AS_OF, name="b-0")
    std = standard(deliver, certificate_expires_on=day(200),
                   equipment=[("e-60", day(45)), ("e-never", None), ("e-far", day(300))])

    result = sweep(scheduler_db)

    assert result.notices_emitted == 4
    assert result.items_scanned == 9  # 5 instruments, 3 pieces of equipment, 1 certificate
    found = notices_by(outbox)
    # org_a: its overdue instrument and those due soon in one event, typed by the overdue one.
    assert set(found) == {("recalibration.overdue", org_a), ("recalibration.due_soon", org_b),
                          ("recalibration.due_soon", "li@example.com"),
                          ("certificate.renewal_due", "li@example.com")}
    a = found["recalibration.overdue", org_a]
    assert listed(a) == [("a-overdue", "overdue:0"), ("a-7", "7"), ("a-30", "30")]
    assert [(i["due_on"], i["days_left"]) for i in a["items"]] == [
        (day(-3).isoformat(), -3), (day(5).isoformat(), 5), (day(20).isoformat(), 20)]
    assert a["items"][0]["regulation"] == "JJG 52-2013"
    assert a["items"][0]["mandatory"] is True
    assert a["recipient"] == {
        "kind": "organization", "organization_id": org_a, "name": "淄博示例氢源新材料有限公司",
        "name_en": None, "contacts": [{"name": "王工", "email": "wang@example.com", "locale": "zh-CN"}]}
    assert a["notice"] == "overdue"
    assert a["as_of"] == AS_OF.isoformat()
    assert a["earliest_due_on"] == day(-3).isoformat()
    assert INSTITUTE_NAME in a["next_steps"]
    b = found["recalibration.due_soon", org_b]
    assert (b["notice"], listed(b)) == ("due_soon", [("b-0", "0")])
    custodian = found["recalibration.due_soon", "li@example.com"]
    assert listed(custodian) == [("e-never", "0"), ("e-60", "60")]
    assert custodian["items"][0]["due_on"] is None
    assert {i["standard_name"] for i in custodian["items"]} == {"气体流量标准装置"}
    assert custodian["recipient"]["contacts"] == [{"name": "李工", "email": "li@example.com"}]
    # The custodian's certificate is a notice of its own, in the same sweep.
    renewal = found["certificate.renewal_due", "li@example.com"]
    assert (renewal["notice"], listed(renewal)) == ("renewal_due", [("气体流量标准装置", "210")])
    assert renewal["items"][0]["item_id"] == std["id"]

    with scheduler_db.Session() as session:
        keys = session.execute(select(NoticeKey.event_id)).scalars().all()
        runs = session.scalars(select(SweepRun)).all()
    assert len(keys) == 7
    assert set(keys) == {event["id"] for event in outbox()}
    assert [(r.as_of, r.trigger, r.items_scanned, r.notices_emitted) for r in runs] == [(AS_OF, "api", 9, 4)]


def test_an_enterprise_gets_one_notice_per_sweep_whatever_the_states_of_its_items(scheduler_db, deliver,
                                                                                  outbox):
    org = organization(deliver)
    for n in range(50):
        instrument(deliver, org, day(5), name=f"batch-{n:02d}")
    for offset in (-1, 0, 7, 30):
        instrument(deliver, org, day(offset), name=f"d{offset}")

    first = sweep(scheduler_db)
    later = sweep(scheduler_db, as_of=day(7))

    assert (first.notices_emitted, later.notices_emitted) == (1, 1)
    sent = outbox()
    assert [(e["type"], e["subject"]) for e in sent] == [("refstd.scheduler.recalibration.overdue", org)] * 2
    assert len(sent[0]["data"]["items"]) == 54
    assert [(i["name"], i["days_left"]) for i in sent[0]["data"]["items"][:3]] == [
        ("d-1", -1), ("d0", 0), ("batch-00", 5)]
    # A week later: the batch and d0 have turned overdue, d7 is due today, d30 waits for its next lead.
    assert sorted({(i["lead"], i["days_left"]) for i in sent[1]["data"]["items"]}) == [
        ("0", 0), ("overdue:0", -7), ("overdue:0", -2), ("overdue:1", -8)]
    assert len(sent[1]["data"]["items"]) == 53
    assert count(scheduler_db, NoticeKey) == 54 + 53


def test_a_second_sweep_the_same_day_emits_nothing(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(7))
    assert sweep(scheduler_db).notices_emitted == 1

    again = sweep(scheduler_db)

    assert (again.items_scanned, again.notices_emitted) == (1, 0)
    assert len(outbox()) == 1
    assert count(scheduler_db, SweepRun) == 2


def test_a_sweep_seven_days_later_sends_the_next_lead_only_for_items_crossing_it(scheduler_db, deliver,
                                                                                 outbox):
    org = organization(deliver)
    instrument(deliver, org, day(12), name="crosses-7")
    instrument(deliver, org, day(20), name="stays-in-30")
    instrument(deliver, org, day(40), name="reaches-30-later")
    first = sweep(scheduler_db)
    assert [listed(n) for n in first.notices] == [[("crosses-7", "30"), ("stays-in-30", "30")]]

    later = sweep(scheduler_db, as_of=day(7))

    assert later.notices_emitted == 1
    assert [listed(e["data"]) for e in outbox()] == [[("crosses-7", "30"), ("stays-in-30", "30")],
                                                     [("crosses-7", "7")]]
    assert outbox()[-1]["data"]["items"][0]["days_left"] == 5


def test_an_item_found_overdue_after_downtime_gets_only_the_current_reminder(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(-10), name="ten-days-overdue")

    sweep(scheduler_db)
    sweep(scheduler_db, as_of=day(1))

    assert [listed(e["data"]) for e in outbox()] == [[("ten-days-overdue", "overdue:1")]]


def test_overdue_reminders_repeat_then_stop_at_the_cap(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(-1), name="late")

    for offset in range(0, 40):
        sweep(scheduler_db, as_of=day(offset))

    assert [listed(e["data"]) for e in outbox()] == [[("late", f"overdue:{n}")] for n in range(4)]


def test_a_never_calibrated_equipment_is_noticed_once(scheduler_db, deliver, outbox):
    standard(deliver, certificate_expires_on=day(1000), equipment=[("never", None)])

    sweep(scheduler_db)
    sweep(scheduler_db, as_of=day(1))
    sweep(scheduler_db, as_of=day(30))

    assert [listed(e["data"]) for e in outbox()] == [[("never", "0")]]


def test_removed_instruments_are_not_noticed(scheduler_db, deliver, outbox):
    org = organization(deliver)
    data = instrument(deliver, org, day(3))
    instrument(deliver, org, day(3), id=data["id"], version=2, status="removed", suffix="removed")

    result = sweep(scheduler_db)

    assert (result.items_scanned, result.notices_emitted) == (0, 0)
    assert outbox() == []


def test_items_of_an_organization_unknown_to_the_read_model_still_go_out_without_contacts(
        scheduler_db, deliver, outbox):
    unknown = str(uuid.uuid4())
    instrument(deliver, unknown, day(7), name="orphan")

    sweep(scheduler_db)

    data = notices_by(outbox)["recalibration.due_soon", unknown]
    assert data["recipient"] == {"kind": "organization", "organization_id": unknown, "name": None,
                                 "name_en": None, "contacts": []}
    assert listed(data) == [("orphan", "7")]


# -- due dates that move -------------------------------------------------------------------------

def test_a_replayed_or_older_inventory_event_does_not_move_a_due_date_back(scheduler_db, deliver, outbox):
    org = organization(deliver)
    item_id = str(uuid.uuid4())
    newer = payloads.instrument(organization_id=org, id=item_id, version=2, due_on=day(100))
    older = payloads.instrument(organization_id=org, id=item_id, version=1, due_on=day(5))
    newer_event = deliver("instrument.verified", newer)
    deliver("instrument.registered", older)  # arrives late
    deliver("instrument.verified", event=newer_event)  # and a replay

    result = sweep(scheduler_db)

    assert result.notices_emitted == 0
    with scheduler_db.Session() as session:
        assert session.get(TrackedItem, ("instrument", item_id)).due_on == day(100)


def test_a_recalibration_gives_the_new_due_date_its_own_notices(scheduler_db, deliver, outbox):
    org = organization(deliver)
    data = instrument(deliver, org, day(5), name="gauge")
    sweep(scheduler_db)
    instrument(deliver, org, day(6), id=data["id"], version=2, name="gauge", suffix="verified")

    result = sweep(scheduler_db)

    assert result.notices_emitted == 1
    assert [(i["due_on"], i["lead"]) for e in outbox() for i in e["data"]["items"]] == [
        (day(5).isoformat(), "7"), (day(6).isoformat(), "7")]
    with scheduler_db.Session() as session:
        keys = session.execute(select(NoticeKey.due_on, NoticeKey.lead)).all()
    assert sorted(keys) == [(day(5), "7"), (day(6), "7")]


# -- concurrency, dry runs, policy, side effects ------------------------------------------------

def test_two_sweeps_at_once_notice_each_key_once_in_total(scheduler_db, deliver, outbox):
    orgs = [organization(deliver, name=f"示例企业{n}") for n in range(3)]
    for n, org in enumerate(orgs):
        for offset in (0, 5, 20, -2):
            instrument(deliver, org, day(offset), name=f"{n}/{offset}")
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait(timeout=10)
            with scheduler_db.transaction() as session:
                results.append(run_sweep(session, as_of=AS_OF, policy=load_policy(session), trigger="cron"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(r.notices_emitted for r in results) == [0, 3]  # one for each org
    assert len(outbox()) == 3
    assert count(scheduler_db, NoticeKey) == 12
    assert sum(len(e["data"]["items"]) for e in outbox()) == 12


def test_a_key_recorded_behind_the_sweeps_back_rolls_the_whole_sweep_back(scheduler_db, deliver, outbox,
                                                                         monkeypatch):
    org = organization(deliver)
    instrument(deliver, org, day(7))
    instrument(deliver, org, day(6))
    with scheduler_db.transaction() as session:
        # read before a first sweep ...
        stale = sweep_module._candidates(session, AS_OF, load_policy(session))
    assert sweep(scheduler_db).notices_emitted == 1  # ... which notices both
    # A writer that bypassed the lock would work from such a stale read.
    monkeypatch.setattr(sweep_module, "_candidates", lambda *args: stale)
    events_before = len(outbox())

    with pytest.raises(SweepConflict):
        sweep(scheduler_db)

    assert len(outbox()) == events_before
    assert count(scheduler_db, SweepRun) == 1


def test_a_dry_run_writes_nothing_and_shows_what_the_sweep_will_send(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(7), name="soon")
    instrument(deliver, org, day(-1), name="late")
    standard(deliver, certificate_expires_on=day(180), equipment=[("never", None)])

    preview = sweep(scheduler_db, dry_run=True)

    assert (preview.dry_run, preview.notices_emitted, preview.items_scanned) == (True, 0, 4)
    assert [count(scheduler_db, model) for model in (NoticeKey, OutboxMessage, SweepRun)] == [0, 0, 0]
    real = sweep(scheduler_db)
    assert [(n["type"], n["subject"], listed(n)) for n in preview.notices] == \
           [(n["type"], n["subject"], listed(n)) for n in real.notices]
    assert [(e["type"], e["subject"], listed(e["data"])) for e in outbox()] == \
           [(n["type"], n["subject"], listed(n)) for n in preview.notices]
    assert sweep(scheduler_db, dry_run=True).notices == []


def test_a_changed_policy_takes_effect_at_the_next_sweep(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(40), name="in-45")
    policy = {"instrument_lead_days": [45, 7, 0], "equipment_lead_days": [60, 30, 7, 0],
              "certificate_lead_days": [270, 210, 180], "overdue_repeat_days": 7, "overdue_max_notices": 4,
              "booking_reminder_hours": 24}

    assert sweep(scheduler_db).notices_emitted == 0
    assert sweep(scheduler_db, policy=policy).notices_emitted == 1
    assert listed(outbox()[0]["data"]) == [("in-45", "45")]


def test_a_real_sweep_cancels_bookings_of_expired_certificates_and_a_dry_run_does_not(
        scheduler_db, monkeypatch):
    calls = []
    monkeypatch.setattr(bookings, "cancel_bookings_of_expired_certificates",
                        lambda session, as_of: calls.append(as_of) or 0)

    sweep(scheduler_db, dry_run=True)
    sweep(scheduler_db)

    assert calls == [AS_OF]


def test_sweep_now_runs_as_of_today_in_the_institute_zone_and_commits(scheduler_db, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, AS_OF, name="due-today")
    settings = Settings("scheduler", database_url=scheduler_db.url)
    settings.institute_tz = "Asia/Shanghai"
    just_after_midnight = dt.datetime.combine(AS_OF, dt.time(0, 5)) - dt.timedelta(hours=8)

    result = sweep_now(scheduler_db, settings, trigger="cron", now=just_after_midnight.replace(tzinfo=dt.UTC))

    assert (result.as_of, result.notices_emitted) == (AS_OF, 1)
    assert listed(outbox()[0]["data"]) == [("due-today", "0")]
    with scheduler_db.Session() as session:
        assert session.scalars(select(SweepRun.trigger)).all() == ["cron"]


# -- HTTP ----------------------------------------------------------------------------------------

def test_post_sweeps_runs_the_sweep_as_of_today(client, lab, deliver, outbox):
    today = institute_today()
    org = organization(deliver)
    instrument(deliver, org, day(7, today))

    response = client.post("/api/v1/sweeps", headers=lab)

    assert response.status_code == 200
    assert response.json == {"items_scanned": 1, "notices_emitted": 1, "as_of": today.isoformat(),
                             "dry_run": False}
    assert len(outbox("recalibration.due_soon")) == 1
    again = client.post(f"/api/v1/sweeps?as_of={today.isoformat()}", headers=lab)  # today: allowed
    assert (again.status_code, again.json["notices_emitted"]) == (200, 0)


def test_post_sweeps_dry_run_on_a_date_lists_the_events_and_emits_nothing(client, admin, deliver, outbox):
    org = organization(deliver)
    instrument(deliver, org, day(7), name="soon")

    response = client.post(f"/api/v1/sweeps?dry_run=true&as_of={AS_OF.isoformat()}", headers=admin)

    assert response.status_code == 200
    body = response.json
    assert (body["dry_run"], body["as_of"], body["notices_emitted"], body["items_scanned"]) == \
           (True, AS_OF.isoformat(), 0, 1)
    assert [(n["type"], n["subject"], listed(n)) for n in body["notices"]] == \
           [("refstd.scheduler.recalibration.due_soon", org, [("soon", "7")])]
    assert body["notices"][0]["recipient"]["organization_id"] == org
    assert outbox() == []


def test_post_sweeps_answers_409_when_another_sweep_got_in_first(client, lab, scheduler_db, deliver, outbox,
                                                                  monkeypatch):
    org = organization(deliver)
    instrument(deliver, org, day(7, institute_today()))
    with scheduler_db.transaction() as session:
        stale = sweep_module._candidates(session, institute_today(), load_policy(session))
    assert client.post("/api/v1/sweeps", headers=lab).json["notices_emitted"] == 1
    monkeypatch.setattr(sweep_module, "_candidates", lambda *args: stale)

    response = client.post("/api/v1/sweeps", headers=lab)

    assert response.status_code == 409
    assert response.json["code"] == "concurrent_sweep"
    assert len(outbox()) == 1
    assert count(scheduler_db, SweepRun) == 1


@pytest.mark.parametrize(("query", "offset"), [("as_of={}", -1), ("dry_run=false&as_of={}", 1)])
def test_post_sweeps_refuses_another_date_without_dry_run(client, admin, scheduler_db, query, offset):
    another_day = institute_today() + dt.timedelta(days=offset)

    response = client.post(f"/api/v1/sweeps?{query.format(another_day.isoformat())}", headers=admin)

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "as_of" in response.json["errors"]
    assert count(scheduler_db, SweepRun) == 0


@pytest.mark.parametrize(("query", "field"), [
    ("dry_run=true&as_of=2026-02-30", "as_of"), ("dry_run=true&as_of=yesterday", "as_of"),
    ("dry_run=true&as_of=0001-01-01", "as_of"), ("dry_run=perhaps", "dry_run"),
])
def test_post_sweeps_names_a_bad_parameter(client, admin, query, field):
    response = client.post(f"/api/v1/sweeps?{query}", headers=admin)

    assert response.status_code == 422
    assert field in response.json["errors"]


@pytest.mark.parametrize("role", ["enterprise", "partner"])
def test_only_the_institute_runs_sweeps(client, token_for, role, scheduler_db):
    response = client.post("/api/v1/sweeps", headers=token_for(role, str(uuid.uuid4())))

    assert response.status_code == 403
    assert count(scheduler_db, SweepRun) == 0


def test_sweeps_need_a_token(client):
    assert client.post("/api/v1/sweeps").status_code == 401
