"""The system's story end to end, on real processes (one of each, then two of each): an enterprise told
before its instruments fall due, a partner university booking a standard, the standard suspended under
the booking, and bad input refused everywhere without a trace.

The steps run in order on one system and share what they made (``story``). Every address and webhook
path carries the system's tag: the SMTP sink and the webhook receiver outlive one system.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from shared.timeutil import add_months, institute_today
from tests.e2e.actions import (
    assert_nothing_lost,
    import_instruments,
    new_client,
    on_every_replica,
    register_organization,
    register_standard,
    settle,
    total,
    wait,
    wait_for_startup_sweeps,
)
from tests.e2e.conftest import Api
from tests.support import valid_credit_code

PREFIX = "refstd.scheduler."
INSTITUTE_TZ = ZoneInfo(os.environ.get("INSTITUTE_TZ") or "Asia/Shanghai")  # as the services read it
CJK = re.compile(r"[\u4e00-\u9fff]")
# How long an event may take from the request that caused it to its email, webhook or read model: seconds
# normally; the bound only matters when something is broken (or the machine is very busy).
PROPAGATION = 60


@pytest.fixture(scope="module")
def story(system, as_admin) -> dict:
    """What the steps made, for the later steps; a fresh one for each system."""
    tag = uuid.uuid4().hex[:8]
    return {"tag": tag, "today": institute_today(), "lab": new_client(as_admin, "lab_staff", replica=2)}


def emails(smtp, address: str, event_type: str | None = None) -> list:
    return [m for m in smtp.received(address)
            if event_type is None or m["X-Refstd-Event-Type"] == PREFIX + event_type]


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def calendar_of(message) -> Calendar:
    parts = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    assert len(parts) == 1, [part.get_content_type() for part in message.walk()]
    return Calendar.from_ical(parts[0].get_content())


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), INSTITUTE_TZ)


# -- 1. an enterprise is told once, in Chinese, of what falls due ---------------------------------------

def test_enterprise_instruments_due_are_noticed_once_in_chinese(system, as_admin, smtp, story):
    """Imported instruments due in 5 days, overdue and never verified are noticed by the sweep; those due
    later are not. A sweep sends one notice per enterprise (domain.md, rule 4): the overdue instrument and
    those due soon in one email, each with its own state. A second sweep sends nothing."""
    tag, today = story["tag"], story["today"]
    contact = f"wang.{tag}@hengtai.example"
    enterprise = register_organization(
        as_admin, name="淄博恒泰精密仪器有限公司", kind="enterprise",
        credit_code=valid_credit_code("91370303MA3C0E2E1"),
        contacts=[{"name": "王工", "email": contact, "phone": "0533-1234567"}])
    story["enterprise"] = enterprise
    story["enterprise_api"] = new_client(as_admin, "enterprise", enterprise["id"])

    def instrument(name, category, serial, due_in_days, noticed, months=12, **columns):
        """A CSV row of an instrument last verified ``months`` before it falls due in ``due_in_days`` days
        (None: never verified, so due on the day it is registered), its due date and the notice it is in."""
        if due_in_days is None:
            return ({"name": name, "category": category, "serial_number": serial, "interval_months": months,
                     **columns}, today, noticed)
        verified = add_months(today + dt.timedelta(due_in_days), -months)
        return ({"name": name, "category": category, "serial_number": serial, "interval_months": months,
                 "last_verified_on": verified.isoformat(), **columns}, add_months(verified, months), noticed)

    rows = [
        instrument("弹簧管式一般压力表", "压力表", "YB-2301", 5, "due_soon", regulation="JJG 52-2013",
                   mandatory="true", manufacturer="上海自动化仪表", location="一车间"),
        instrument("电子天平", "天平", "TP-0457", 5, "due_soon", months=24, regulation="JJG 1036-2022",
                   mandatory="false"),
        instrument("工业铂热电阻", "温度计", "PT-0099", -3, "overdue", regulation="JJG 229-2010", mandatory="true"),
        instrument("涡街流量计", "流量计", "LL-7788", None, "due_soon", mandatory="true"),
        instrument("数字多用表", "万用表", "WY-5501", 200, None),
        instrument("声级计", "声级计", "SJ-3141", 45, None),
    ]
    # The workers' own sweep at start must be behind us: the story's sweep is the one that notices.
    wait_for_startup_sweeps(system)

    response = import_instruments(as_admin, enterprise["id"], [row for row, _, _ in rows])
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 6, "updated": 0}
    listed = {i["serial_number"]: i for i in story["enterprise_api"].get(
        "inventory", "/instruments", params={"page_size": 50}).json()}
    assert {serial: listed[serial]["due_on"] for serial in listed} == {
        row["serial_number"]: due_on.isoformat() for row, due_on, _ in rows}
    wait(system, lambda: total(as_admin, "scheduler", "/due", organization_id=enterprise["id"],
                               within_days=3660) == 6, PROPAGATION, "the scheduler to track the 6 imported instruments")

    swept = story["lab"].post("scheduler", "/sweeps")
    assert swept.status_code == 200, swept.text
    assert swept.json()["notices_emitted"] == 1  # one for this enterprise, whatever its items' states

    wait(system, lambda: emails(smtp, contact), PROPAGATION, f"the notice to {contact}")
    settle(as_admin)
    (message,) = emails(smtp, contact)
    assert message["X-Refstd-Event-Type"] == PREFIX + "recalibration.overdue"  # one of its items is overdue
    assert set(smtp.counts(contact).values()) == {1}  # its Message-ID once
    assert message["Message-ID"]
    assert message["Content-Language"] == "zh-CN"
    overdue_on = [due_on for _, due_on, noticed in rows if noticed == "overdue"]
    upcoming_on = [due_on for _, due_on, noticed in rows if noticed == "due_soon"]
    assert str(message["Subject"]) == (
        f"4 台计量器具需检定：1 台已超期（{overdue_on[0].isoformat()} 到期），"
        f"3 台将于 {max(upcoming_on).isoformat()} 前到期")
    body = text_of(message)
    assert body.startswith("王工，您好"), body
    assert "其中 1 台已超期" in body and "另有 3 台将于" in body
    serials = {row["serial_number"] for row, _, _ in rows}
    assert {serial for serial in serials if serial in body} == {
        row["serial_number"] for row, _, noticed in rows if noticed}, body
    for row, _, noticed in rows:
        if noticed:
            assert row["name"] in body
    # Most urgent first, each with its own state: overdue, due today (never verified), due in 5 days.
    def state(due_on):
        days = (due_on - today).days
        return f"已超期 {-days} 天" if days < 0 else "今天到期" if days == 0 else f"剩余 {days} 天"

    noticed = sorted(((due_on, row["name"]) for row, due_on, noticed in rows if noticed),
                     key=lambda pair: ((pair[0] - today).days, pair[0], pair[1]))
    assert [line.strip() for line in body.splitlines() if line.strip().startswith("到期日：")] == [
        f"到期日：{due_on.isoformat()}（{state(due_on)}）" for due_on, _ in noticed], body
    assert [state(due_on)[:3] for due_on, _ in noticed] == ["已超期", "今天到", "剩余 ", "剩余 "]

    again = story["lab"].post("scheduler", "/sweeps")
    assert again.status_code == 200, again.text
    assert again.json()["notices_emitted"] == 0
    settle(as_admin)
    assert_nothing_lost(as_admin)
    assert len(emails(smtp, contact)) == 1
    assert total(as_admin, "notifier", "/notifications", organization_id=enterprise["id"]) == 1


# -- 2. a partner university books a standard -------------------------------------------------------

def test_partner_booking_is_approved_and_told_by_webhook_and_email(system, as_admin, smtp, webhooks, story):
    """A partner's booking waits for lab staff; its webhook hears of the request and the confirmation
    (signatures verified), its contact gets both by email, the confirmation with a calendar invitation."""
    tag, today, lab = story["tag"], story["today"], story["lab"]
    contact, custodian = f"zhao.{tag}@sdut.example", f"li.{tag}@refstd.example"
    partner_org = register_organization(
        as_admin, name="山东理工大学", name_en="Shandong University of Technology", kind="university",
        contacts=[{"name": "赵老师", "email": contact}])
    partner = new_client(as_admin, "partner", partner_org["id"], replica=2)
    standard = register_standard(lab, f"E2E-{tag}", custodian, (today - dt.timedelta(30)).isoformat())
    assert standard["usable"] is True, standard
    story.update(partner_org=partner_org, partner=partner, standard=standard, partner_contact=contact,
                 custodian=custodian)

    path = f"/{tag}/sdut/hooks"
    endpoint = partner.post("notifier", "/webhooks", json={
        "url": webhooks.url(path), "event_types": ["refstd.scheduler.booking.*"]})
    assert endpoint.status_code == 201, endpoint.text
    assert endpoint.json()["organization_id"] == partner_org["id"]
    webhooks.add(path, endpoint.json()["secret"])
    story["webhook_path"] = path

    window = {"from": at(today + dt.timedelta(1), 0).isoformat(), "to": at(today + dt.timedelta(8), 0).isoformat()}
    wait(system, lambda: partner.get("scheduler", f"/standards/{standard['id']}/availability",
                                     params=window).status_code == 200,
         PROPAGATION, "the scheduler to learn of the new standard")

    starts, ends = at(today + dt.timedelta(3), 9), at(today + dt.timedelta(3), 12)
    booked = partner.post("scheduler", "/bookings", json={
        "standard_id": standard["id"], "starts_at": starts.isoformat(), "ends_at": ends.isoformat(),
        "purpose": "压力传感器校准实验（本科教学）"})
    assert booked.status_code == 201, booked.text
    booking = booked.json()
    assert booking["status"] == "pending"
    assert booking["requested_by"]["organization_id"] == partner_org["id"]

    approved = lab.post("scheduler", f"/bookings/{booking['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "confirmed"
    story["booking"] = approved.json()

    def booking_events(suffix: str) -> list[dict]:
        return [e for e in webhooks.received(path, suffix) if e["data"]["id"] == booking["id"]]

    wait(system, lambda: booking_events("booking.requested") and booking_events("booking.confirmed"), PROPAGATION,
         "booking.requested and booking.confirmed at the partner's webhook")
    wait(system, lambda: emails(smtp, contact, "booking.confirmed"), PROPAGATION, f"the confirmation to {contact}")
    settle(as_admin)
    assert_nothing_lost(as_admin)

    assert not [r for r in webhooks.rejected if r["path"] == path], webhooks.rejected
    delivered = {e["type"]: e for e in webhooks.received(path)}  # in whatever order they were sent
    assert sorted(delivered) == [PREFIX + "booking.confirmed", PREFIX + "booking.requested"]
    assert set(webhooks.counts(path).values()) == {1}  # each webhook-id (the CloudEvent id) once
    assert delivered[PREFIX + "booking.requested"]["data"]["status"] == "pending"
    assert delivered[PREFIX + "booking.confirmed"]["data"]["status"] == "confirmed"

    assert sorted(m["X-Refstd-Event-Type"] for m in emails(smtp, contact)) == [
        PREFIX + "booking.confirmed", PREFIX + "booking.requested"]
    assert [m["X-Refstd-Event-Type"] for m in emails(smtp, custodian)] == [PREFIX + "booking.requested"]
    assert set(smtp.counts(contact).values()) == {1} and set(smtp.counts(custodian).values()) == {1}
    (confirmation,) = emails(smtp, contact, "booking.confirmed")
    assert CJK.search(str(confirmation["Subject"]))
    invitation = calendar_of(confirmation)
    assert str(invitation["METHOD"]) == "REQUEST"
    (event,) = invitation.walk("VEVENT")
    assert str(event["UID"]) == f"{booking['id']}@refstd"
    assert event.decoded("DTSTART") == starts and event.decoded("DTEND") == ends
    assert str(event["STATUS"]) == "CONFIRMED"
    assert contact in str(event["ATTENDEE"])


def at_once(callers: list[Api], call) -> list:
    """``call(caller)`` for every caller, each in its own thread, the threads released together; the
    answers in the callers' order. What a call raised is raised here. Every caller is its own Api: a
    ``requests.Session`` is not to be shared between threads."""
    assert len({id(caller) for caller in callers}) == len(callers), "one Api per thread"
    barrier = threading.Barrier(len(callers))

    def run(caller: Api):
        barrier.wait(30)
        return call(caller)

    with ThreadPoolExecutor(len(callers)) as pool:
        futures = [pool.submit(run, caller) for caller in callers]
        return [future.result(timeout=120) for future in futures]


@pytest.mark.parametrize("day", [4, 5, 6])
def test_one_of_concurrent_bookings_of_one_slot_wins(system, story, day):
    """Several requests for the same slot at once, spread over every scheduler replica: one booking."""
    lab, standard, today = story["lab"], story["standard"], story["today"]
    callers = on_every_replica(lab, "scheduler", times=3)
    starts, ends = at(today + dt.timedelta(day), 14), at(today + dt.timedelta(day), 16)
    request = {"standard_id": standard["id"], "starts_at": starts.isoformat(), "ends_at": ends.isoformat(),
               "purpose": "期间核查"}

    answers = at_once(callers, lambda api: api.post("scheduler", "/bookings", json=request))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * (len(callers) - 1), [(a.status_code, a.text[:200]) for a in answers]
    assert all(a.json()["code"] == "booking_conflict" for a in answers if a.status_code == 409)
    (winner,) = [answer.json() for answer in answers if answer.status_code == 201]
    held = lab.get("scheduler", "/bookings", params={
        "standard_id": standard["id"], "from": starts.isoformat(), "to": ends.isoformat()}).json()
    assert [(b["id"], b["status"]) for b in held] == [(winner["id"], "confirmed")]
    story.setdefault("lab_bookings", []).append(winner)


def test_concurrent_sweeps_notice_once(system, as_admin, smtp, story):
    """A sweep asked of every scheduler replica at once: each notice goes out once."""
    tag, today = story["tag"], story["today"]
    contact = f"sun.{tag}@jinghua.example"
    other = register_organization(
        as_admin, name="淄博精华化工有限公司", kind="enterprise", credit_code=valid_credit_code("91370305MA3C0E2E2"),
        contacts=[{"name": "孙经理", "email": contact}])
    instrument = as_admin.post("inventory", "/instruments", json={
        "organization_id": other["id"], "name": "压力变送器", "category": "变送器", "serial_number": "BS-0001",
        "interval_months": 12, "last_verified_on": add_months(today + dt.timedelta(6), -12).isoformat()})
    assert instrument.status_code == 201, instrument.text
    story.update(other_enterprise=other, other_instrument=instrument.json())
    wait(system, lambda: total(as_admin, "scheduler", "/due", organization_id=other["id"]) == 1, PROPAGATION,
         "the scheduler to track the new instrument")

    callers = on_every_replica(story["lab"], "scheduler", times=2)
    answers = at_once(callers, lambda api: api.post("scheduler", "/sweeps"))
    assert all(a.status_code in (200, 409) for a in answers), [(a.status_code, a.text) for a in answers]
    assert sum(a.json()["notices_emitted"] for a in answers if a.status_code == 200) == 1

    wait(system, lambda: emails(smtp, contact), PROPAGATION, f"the notice to {contact}")
    settle(as_admin)
    assert_nothing_lost(as_admin)
    (notice,) = emails(smtp, contact)
    assert notice["X-Refstd-Event-Type"] == PREFIX + "recalibration.due_soon"
    assert "BS-0001" in text_of(notice)
    assert total(as_admin, "notifier", "/notifications", organization_id=other["id"]) == 1


# -- 3. the standard is suspended under the booking ----------------------------------------------------

def test_suspending_the_standard_cancels_the_booking_and_tells_the_partner(system, as_admin, smtp, webhooks,
                                                                           story):
    """Suspending a standard cancels its bookings; the partner hears it by webhook and by email, with a
    calendar cancellation of the same event."""
    lab, partner, standard, booking = story["lab"], story["partner"], story["standard"], story["booking"]
    contact, path = story["partner_contact"], story["webhook_path"]
    suspended = lab.post("inventory", f"/standards/{standard['id']}/status",
                         json={"status": "suspended", "reason": "主标准器送上级计量机构检定"})
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["usable"] is False

    def cancelled() -> bool:
        return partner.get("scheduler", f"/bookings/{booking['id']}").json()["status"] == "cancelled"

    wait(system, cancelled, PROPAGATION, "the partner's booking to be cancelled")
    now = partner.get("scheduler", f"/bookings/{booking['id']}").json()
    assert now["reason"] == "standard_unavailable"
    for lab_booking in story["lab_bookings"]:
        assert lab.get("scheduler", f"/bookings/{lab_booking['id']}").json()["status"] == "cancelled"

    wait(system, lambda: webhooks.received(path, "booking.cancelled"), PROPAGATION, "booking.cancelled at the webhook")
    wait(system, lambda: emails(smtp, contact, "booking.cancelled"), PROPAGATION, f"the cancellation to {contact}")
    settle(as_admin)
    assert_nothing_lost(as_admin)

    (event,) = webhooks.received(path, "booking.cancelled")  # the lab's own booking is not the partner's
    assert event["data"]["id"] == booking["id"] and event["data"]["reason"] == "standard_unavailable"
    assert set(webhooks.counts(path).values()) == {1}
    (cancellation,) = emails(smtp, contact, "booking.cancelled")
    invitation = calendar_of(cancellation)
    assert str(invitation["METHOD"]) == "CANCEL"
    (vevent,) = invitation.walk("VEVENT")
    assert str(vevent["UID"]) == f"{booking['id']}@refstd" and str(vevent["STATUS"]) == "CANCELLED"
    assert int(vevent["SEQUENCE"]) > int(calendar_of(emails(smtp, contact, "booking.confirmed")[0])
                                         .walk("VEVENT")[0]["SEQUENCE"])
    assert "不可用" in text_of(cancellation), text_of(cancellation)  # the reason, in words
    # The custodian hears of every booking cancelled, the partner's and the lab's own.
    assert len(emails(smtp, story["custodian"], "booking.cancelled")) == 1 + len(story["lab_bookings"])
    assert set(smtp.counts(story["custodian"]).values()) == {1}


# -- 4. bad input is refused everywhere and changes nothing --------------------------------------------

def _state(admin, story) -> dict[str, int]:
    """How many of everything there are, and the versions of what the bad requests aim at."""
    other_org, standard = story["other_enterprise"]["id"], story["standard"]["id"]
    return {
        "organizations": total(admin, "inventory", "/organizations"),
        "standards": total(admin, "inventory", "/standards"),
        "instruments": total(admin, "inventory", "/instruments"),
        "clients": total(admin, "inventory", "/clients"),
        "bookings": total(admin, "scheduler", "/bookings"),
        "blackouts": total(admin, "scheduler", f"/standards/{standard}/blackouts"),
        "webhooks": total(admin, "notifier", "/webhooks"),
        "notifications": total(admin, "notifier", "/notifications"),
        "standard version": admin.get("inventory", f"/standards/{standard}").json()["version"],
        "organization version": admin.get("inventory", f"/organizations/{other_org}").json()["version"],
        "instrument version": admin.get(
            "inventory", f"/instruments/{story['other_instrument']['id']}").json()["version"],
        "policy version": admin.get("scheduler", "/policies").json()["version"],
        "preferences version": admin.get("notifier", f"/organizations/{other_org}/preferences").json()["version"],
    }


def test_bad_input_is_refused_with_a_problem_naming_the_field_and_changes_nothing(system, as_admin, story):
    """Every service answers bad input (a body that is not JSON, wrong types, naive timestamps, unknown
    units, a bad credit code, another organization's ids) with a problem+json 4xx naming the field, and
    nothing anywhere changes: no row, no version, no event, no notification."""
    lab, partner, enterprise = story["lab"], story["partner"], story["enterprise_api"]
    standard, today = story["standard"], story["today"]
    other_org, other_instrument = story["other_enterprise"], story["other_instrument"]
    notification = as_admin.get("notifier", "/notifications", params={
        "organization_id": other_org["id"]}).json()[0]
    settle(as_admin)
    before = _state(as_admin, story)
    naive = dt.datetime.combine(today + dt.timedelta(10), dt.time(9)).isoformat()
    not_json = {"data": b'{"name": "unterminated', "headers": {"Content-Type": "application/json"}}
    webhook_url = "http://127.0.0.1:9/hook"
    valid = valid_credit_code("91370303MA3C0E2E3")
    wrong_check_character = valid[:-1] + ("1" if valid[-1] == "0" else "0")

    # (caller, method, service, path, request arguments, status, the field the problem must name)
    cases = [
        (as_admin, "POST", "inventory", "/organizations", not_json, 400, None),
        (as_admin, "POST", "inventory", "/organizations",
         {"json": {"name": 42, "kind": "university", "contacts": "none"}}, 422, "name"),
        (as_admin, "POST", "inventory", "/organizations",
         {"json": {"name": "校验位错误有限公司", "kind": "enterprise", "credit_code": wrong_check_character}},
         422, "credit_code"),
        (lab, "POST", "inventory", "/standards",
         {"json": {"code": "BAD-UNIT", "name": "坏单位", "discipline": "mechanical", "measurand": "压力",
                   "range": {"min": 0, "max": 10, "unit": "florps"}}}, 422, "range.unit"),
        (lab, "POST", "inventory", f"/standards/{standard['id']}/checks",
         {"json": {"kind": "stability", "performed_on": today.isoformat(), "value": 0.01, "limit": 0.05,
                   "unit": "blorp/s"}}, 422, "unit"),
        (lab, "PATCH", "inventory", f"/standards/{standard['id']}", {"json": {"recovery_minutes": "30"}},
         422, "recovery_minutes"),
        (as_admin, "POST", "inventory", "/instruments",
         {"json": {"organization_id": other_org["id"], "name": "压力表", "category": "压力表",
                   "serial_number": "X-1", "interval_months": 1.5}}, 422, "interval_months"),
        (as_admin, "POST", "inventory", "/instruments/import",
         {"params": {"organization_id": other_org["id"]},
          "files": {"file": ("bad.csv", "name,category,serial_number,interval_months\n压力表,压力表,N-1,十二\n"
                             .encode(), "text/csv")}}, 422, "row 2.interval_months"),
        (enterprise, "GET", "inventory", f"/instruments/{other_instrument['id']}", {}, 404, None),
        (enterprise, "PATCH", "inventory", f"/instruments/{other_instrument['id']}",
         {"json": {"location": "别人的车间"}}, 404, None),
        (enterprise, "POST", "inventory", "/instruments",
         {"json": {"organization_id": other_org["id"], "name": "压力表", "category": "压力表",
                   "serial_number": "X-2", "interval_months": 12}}, 404, None),
        (enterprise, "POST", "inventory", "/instruments/import",
         {"params": {"organization_id": other_org["id"]},
          "files": {"file": ("x.csv", "name,category,serial_number,interval_months\n压力表,压力表,N-2,12\n"
                             .encode(), "text/csv")}}, 404, None),
        (enterprise, "GET", "inventory", f"/organizations/{story['partner_org']['id']}", {}, 404, None),
        (partner, "PATCH", "inventory", f"/organizations/{other_org['id']}",
         {"json": {"address": "别人的地址"}}, 404, None),
        (partner, "POST", "scheduler", "/bookings", not_json, 400, None),
        (partner, "POST", "scheduler", "/bookings",
         {"json": {"standard_id": standard["id"], "starts_at": naive, "ends_at": naive.replace("T09", "T11")}},
         422, "starts_at"),
        (partner, "POST", "scheduler", "/bookings",
         {"json": {"standard_id": 7, "starts_at": True, "ends_at": [], "purpose": 3}}, 422, "standard_id"),
        (lab, "POST", "scheduler", f"/standards/{standard['id']}/blackouts",
         {"json": {"starts_at": naive, "ends_at": naive.replace("T09", "T11"), "reason": "维护"}},
         422, "starts_at"),
        (partner, "GET", "scheduler", f"/bookings/{story['lab_bookings'][0]['id']}", {}, 404, None),
        (partner, "POST", "scheduler", f"/bookings/{story['lab_bookings'][0]['id']}/cancel", {"json": {}}, 404, None),
        (enterprise, "GET", "scheduler", "/due", {"params": {"within_days": "soon"}}, 422, "within_days"),
        (as_admin, "PUT", "scheduler", "/policies",
         {"json": {"instrument_lead_days": "30,7,0", "equipment_lead_days": [60, 30, 7, 0],
                   "certificate_lead_days": [270, 210, 180], "overdue_repeat_days": 7,
                   "overdue_max_notices": 4, "booking_reminder_hours": 24}}, 422, "instrument_lead_days"),
        (partner, "POST", "notifier", "/webhooks", not_json, 400, None),
        (partner, "POST", "notifier", "/webhooks",
         {"json": {"url": webhook_url, "event_types": "refstd.scheduler.booking.*"}}, 422, "event_types"),
        (partner, "POST", "notifier", "/webhooks",
         {"json": {"url": "hooks at our server", "event_types": ["refstd.scheduler.booking.*"]}}, 422, "url"),
        (partner, "POST", "notifier", "/webhooks",
         {"json": {"url": webhook_url, "event_types": ["refstd.scheduler.booking.*"],
                   "organization_id": other_org["id"]}}, 404, None),
        (partner, "GET", "notifier", f"/notifications/{notification['id']}", {}, 404, None),
        (partner, "PUT", "notifier", f"/organizations/{other_org['id']}/preferences",
         {"json": {"locale": "en"}}, 404, None),
        (enterprise, "PUT", "notifier", f"/organizations/{other_org['id']}/preferences",
         {"json": {"locale": "en"}}, 404, None),
    ]
    failures = []
    for caller, method, service, path, arguments, status, field in cases:
        response = caller.request(method, service, path, **arguments)
        what = f"{method} {service}{path} -> {response.status_code} {response.text[:300]}"
        if response.status_code != status:
            failures.append(f"expected {status}: {what}")
        elif response.headers.get("Content-Type") != "application/problem+json":
            failures.append(f"not problem+json ({response.headers.get('Content-Type')}): {what}")
        elif field is not None and field not in (response.json().get("errors") or {}):
            failures.append(f"the problem does not name {field}: {what}")
    assert not failures, "\n".join(failures)

    settle(as_admin)
    assert_nothing_lost(as_admin)
    assert _state(as_admin, story) == before
