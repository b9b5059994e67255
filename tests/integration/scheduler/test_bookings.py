"""Booking a standard over HTTP: requests, approvals, conflicts, refusals, visibility, the events told to
the notifier, cancellations when a standard stops being usable, and reminders.

Time is frozen at NOW (2031-03-02 09:00 in Shanghai) for the HTTP layer and the service functions."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import select

from services.scheduler import bookings as service
from services.scheduler.models import Reservation
from tests.integration.scheduler import payloads

NOW = dt.datetime(2031, 3, 2, 1, 0, tzinfo=dt.UTC)
CERTIFICATE_OK = dt.date(2034, 1, 1)


def at(day: int, hour: int, minute: int = 0) -> str:
    """A timestamp in March 2031, Shanghai time."""
    return f"2031-03-{day:02d}T{hour:02d}:{minute:02d}:00+08:00"


def utc(day: int, hour: int, minute: int = 0) -> str:
    """The same instant as at(), as the API answers it (UTC)."""
    instant = dt.datetime.fromisoformat(at(day, hour, minute)).astimezone(dt.UTC)
    return instant.isoformat()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(service, "clock", lambda: NOW)


@pytest.fixture
def make_standard(deliver):
    """Registers a standard through an inventory event; returns its payload."""

    def make(**fields) -> dict:
        fields.setdefault("certificate_expires_on", CERTIFICATE_OK)
        public = fields.pop("public", True)
        data = payloads.standard(**fields)
        data["public"] = public
        deliver("standard.registered", data)
        return data

    return make


@pytest.fixture
def standard(make_standard):
    return make_standard(name="气体流量标准装置", recovery_minutes=30)


@pytest.fixture
def university(deliver):
    data = payloads.organization(name="山东大学", kind="university",
                                 contacts=[{"name": "张老师", "email": "zhang@sdu.example.edu.cn", "locale": "zh-CN"}])
    deliver("organization.registered", data)
    return data


@pytest.fixture
def other_university(deliver):
    data = payloads.organization(name="中国计量大学", kind="university")
    deliver("organization.registered", data)
    return data


@pytest.fixture
def partner(token_for, university):
    return token_for("partner", university["id"], client_id="sdu-client")


@pytest.fixture
def other_partner(token_for, other_university):
    return token_for("partner", other_university["id"], client_id="cjlu-client")


@pytest.fixture
def rows(scheduler_db):
    def read() -> list[Reservation]:
        with scheduler_db.Session() as session:
            return list(session.scalars(select(Reservation).order_by(Reservation.starts_at)).all())

    return read


def book(client, headers, standard_id, starts_at, ends_at, purpose="流量计校准", expect=201) -> dict:
    response = client.post("/api/v1/bookings", headers=headers, json={
        "standard_id": standard_id, "starts_at": starts_at, "ends_at": ends_at, "purpose": purpose})
    assert response.status_code == expect, response.get_json()
    return response.get_json()


# -- creating ------------------------------------------------------------------------------------

class TestBookingAStandard:
    def test_a_lab_staff_booking_is_confirmed_at_once_and_announced(self, client, lab, standard, outbox):
        response = client.post("/api/v1/bookings", headers=lab, json={
            "standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 12), "purpose": "期间核查"})
        assert response.status_code == 201
        body = response.get_json()
        assert response.headers["Location"].endswith(f"/api/v1/bookings/{body['id']}")
        assert body["status"] == "confirmed"
        assert body["decided_by"] == "test-lab_staff"
        assert body["requested_by"] == {"client_id": "test-lab_staff", "organization_id": None}
        assert (body["starts_at"], body["ends_at"]) == (utc(3, 9), utc(3, 12))
        assert body["held_until"] == utc(3, 12, 30)  # 30 minutes of recovery
        assert body["sequence"] == 0
        assert client.get(response.headers["Location"], headers=lab).get_json() == body

        [event] = outbox("booking.confirmed")
        assert event["type"] == "refstd.scheduler.booking.confirmed"
        assert event["subject"] == body["id"]
        data = event["data"]
        assert data["id"] == body["id"] and data["status"] == "confirmed"
        assert data["standard_name"] == "气体流量标准装置"
        assert data["standard_code"] == standard["code"]
        assert data["lab"] == "压力实验室"
        assert data["custodian_email"] == "custodian@example.com"
        assert data["requester"] == {"kind": "client", "organization_id": None, "name": "test-lab_staff",
                                     "name_en": None, "contacts": []}

    def test_a_partner_booking_waits_for_approval_and_tells_whom_to_write_to(
            self, client, partner, standard, university, outbox):
        body = book(client, partner, standard["id"], at(3, 9), at(3, 12))
        assert body["status"] == "pending"
        assert body["decided_by"] is None
        assert body["requested_by"] == {"client_id": "sdu-client", "organization_id": university["id"]}
        assert outbox("booking.confirmed") == []
        [event] = outbox("booking.requested")
        requester = event["data"]["requester"]
        assert requester["kind"] == "organization"
        assert requester["organization_id"] == university["id"]
        assert requester["name"] == "山东大学"
        [contact] = requester["contacts"]
        assert (contact["name"], contact["email"], contact["locale"]) == ("张老师", "zhang@sdu.example.edu.cn", "zh-CN")

    def test_an_admin_booking_is_confirmed_too(self, client, admin, standard):
        assert book(client, admin, standard["id"], at(3, 9), at(3, 10))["status"] == "confirmed"

    def test_times_with_another_offset_name_the_same_instants(self, client, lab, standard):
        body = book(client, lab, standard["id"], "2031-03-03T01:00:00Z", "2031-03-03T02:00:00+00:00")
        assert (body["starts_at"], body["ends_at"]) == (utc(3, 9), utc(3, 10))

    def test_the_purpose_may_be_left_out(self, client, lab, standard):
        response = client.post("/api/v1/bookings", headers=lab, json={
            "standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 10)})
        assert response.status_code == 201
        assert response.get_json()["purpose"] is None


class TestWhoMayBook:
    def test_an_enterprise_may_not_book(self, client, token_for, standard, rows, outbox):
        response = client.post("/api/v1/bookings", headers=token_for("enterprise", "org-x"), json={
            "standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 10)})
        assert response.status_code == 403
        assert rows() == [] and outbox() == []

    def test_without_a_token_nothing_is_booked(self, client, standard, rows):
        response = client.post("/api/v1/bookings", json={
            "standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 10)})
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert rows() == []

    def test_a_partner_cannot_book_a_standard_that_is_not_public(self, client, partner, make_standard, rows):
        hidden = make_standard(public=False)
        response = client.post("/api/v1/bookings", headers=partner, json={
            "standard_id": hidden["id"], "starts_at": at(3, 9), "ends_at": at(3, 10)})
        assert response.status_code == 422
        assert "standard_id" in response.get_json()["errors"]
        assert rows() == []

    def test_staff_may_book_a_standard_that_is_not_public(self, client, lab, make_standard):
        hidden = make_standard(public=False)
        assert book(client, lab, hidden["id"], at(3, 9), at(3, 10))["status"] == "confirmed"


class TestBadBookingRequests:
    @pytest.mark.parametrize(("changes", "field"), [
        ({"starts_at": "2031-03-03T09:00:00"}, "starts_at"),
        ({"ends_at": "2031-03-03T12:00:00"}, "ends_at"),
        ({"ends_at": at(3, 9)}, "ends_at"),
        ({"ends_at": at(3, 8)}, "ends_at"),
        ({"starts_at": "2020-01-01T09:00:00+08:00"}, "starts_at"),
        ({"ends_at": "2031-04-04T09:00:00+08:00"}, "ends_at"),  # 32 days
        ({"starts_at": "2040-03-03T09:00:00+08:00", "ends_at": "2040-03-03T10:00:00+08:00"}, "starts_at"),
        ({"starts_at": "0001-01-01T00:00:00+14:00"}, "starts_at"),
        ({"starts_at": "yesterday"}, "starts_at"),
        ({"starts_at": 1234}, "starts_at"),
        ({"standard_id": None}, "standard_id"),
        ({"standard_id": ""}, "standard_id"),
        ({"standard_id": "x" * 37}, "standard_id"),
        ({"standard_id": "00000000-0000-0000-0000-000000000000"}, "standard_id"),
        ({"purpose": "x" * 2001}, "purpose"),
        ({"status": "confirmed"}, "status"),
        ({"colour": "red"}, "colour"),
    ])
    def test_a_bad_field_is_named_and_nothing_is_written(self, client, lab, standard, rows, outbox, changes, field):
        body = {"standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 12), "purpose": "x"}
        body.update(changes)
        response = client.post("/api/v1/bookings", headers=lab, json=body)
        assert response.status_code == 422, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert field in response.get_json()["errors"]
        assert rows() == [] and outbox() == []

    @pytest.mark.parametrize("field", ["standard_id", "starts_at", "ends_at"])
    def test_a_missing_field_is_named(self, client, lab, standard, rows, field):
        body = {"standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 12)}
        del body[field]
        response = client.post("/api/v1/bookings", headers=lab, json=body)
        assert response.status_code == 422
        assert field in response.get_json()["errors"]
        assert rows() == []

    def test_a_body_that_is_not_json_is_a_400(self, client, lab, rows):
        response = client.post("/api/v1/bookings", headers={**lab, "Content-Type": "application/json"},
                               data=b"{not json")
        assert response.status_code == 400
        assert rows() == []


# -- refusals ---------------------------------------------------------------------------------------

class TestStandardUnavailable:
    def refused(self, client, headers, standard_id, starts_at, ends_at) -> list[str]:
        response = client.post("/api/v1/bookings", headers=headers, json={
            "standard_id": standard_id, "starts_at": starts_at, "ends_at": ends_at})
        assert response.status_code == 409, response.get_json()
        body = response.get_json()
        assert body["code"] == "standard_unavailable"
        return body["reasons"]

    def test_a_standard_that_is_not_bookable_is_refused(self, client, lab, make_standard, rows, outbox):
        standard = make_standard(bookable=False)
        assert self.refused(client, lab, standard["id"], at(3, 9), at(3, 10)) == ["not_bookable"]
        assert rows() == [] and outbox() == []

    @pytest.mark.parametrize("status", ["suspended", "sealed", "retired"])
    def test_a_standard_out_of_service_is_refused(self, client, lab, make_standard, status):
        standard = make_standard(status=status)
        assert f"status_{status}" in self.refused(client, lab, standard["id"], at(3, 9), at(3, 10))

    def test_a_certificate_ending_before_the_booking_ends_is_refused_at_shanghai_midnight(
            self, client, lab, make_standard, rows):
        standard = make_standard(certificate_expires_on=dt.date(2031, 3, 5))
        # Valid through 5 March: a booking ending at midnight starting 6 March (Shanghai) is fine ...
        book(client, lab, standard["id"], at(5, 20), "2031-03-06T00:00:00+08:00")
        # ... one ending a minute later is not.
        assert self.refused(client, lab, standard["id"], at(6, 0), at(6, 0, 1)) == [
            "assessment_certificate_expires:2031-03-05"]
        assert len(rows()) == 1

    def test_equipment_falling_due_or_never_calibrated_is_refused_with_each_item(self, client, lab, make_standard):
        due = {"id": "11111111-1111-1111-1111-111111111111", "name": "活塞式压力计", "version": 1,
               "due_on": "2031-03-04"}
        never = {"id": "22222222-2222-2222-2222-222222222222", "name": "数字压力计", "version": 1, "due_on": None}
        ok = {"id": "33333333-3333-3333-3333-333333333333", "name": "温度计", "version": 1, "due_on": "2032-01-01"}
        standard = make_standard(equipment=[due, never, ok])
        assert self.refused(client, lab, standard["id"], at(4, 20), at(5, 1)) == [
            "equipment_due:11111111-1111-1111-1111-111111111111:2031-03-04",
            "equipment_never_calibrated:22222222-2222-2222-2222-222222222222"]

    def test_equipment_due_after_the_booking_does_not_refuse_it(self, client, lab, make_standard):
        equipment = {"id": "44444444-4444-4444-4444-444444444444", "name": "活塞式压力计", "version": 1,
                     "due_on": "2031-03-04"}
        standard = make_standard(equipment=[equipment])
        book(client, lab, standard["id"], at(4, 20), at(4, 23))

    def test_every_reason_is_listed(self, client, partner, make_standard):
        standard = make_standard(bookable=False, status="suspended", certificate_expires_on=dt.date(2031, 3, 2))
        assert self.refused(client, partner, standard["id"], at(3, 9), at(3, 10)) == [
            "not_bookable", "status_suspended", "assessment_certificate_expires:2031-03-02"]


class TestConflicts:
    def conflict(self, client, headers, standard_id, starts_at, ends_at) -> list[dict]:
        response = client.post("/api/v1/bookings", headers=headers, json={
            "standard_id": standard_id, "starts_at": starts_at, "ends_at": ends_at})
        assert response.status_code == 409, response.get_json()
        body = response.get_json()
        assert response.mimetype == "application/problem+json"
        assert body["code"] == "booking_conflict"
        return body["conflicts"]

    def test_an_overlapping_booking_is_refused_naming_what_it_overlaps(self, client, lab, partner, standard, rows,
                                                                        outbox):
        first = book(client, lab, standard["id"], at(3, 9), at(3, 12))
        conflicts = self.conflict(client, partner, standard["id"], at(3, 11), at(3, 13))
        assert conflicts == [{"kind": "booking", "id": first["id"], "starts_at": utc(3, 9), "ends_at": utc(3, 12),
                              "held_until": utc(3, 12, 30)}]
        assert len(rows()) == 1
        assert len(outbox()) == 1

    def test_the_recovery_time_after_a_booking_is_held_too(self, client, lab, standard):
        first = book(client, lab, standard["id"], at(3, 9), at(3, 12))
        assert [c["id"] for c in self.conflict(client, lab, standard["id"], at(3, 12, 15), at(3, 13))] == [first["id"]]
        book(client, lab, standard["id"], at(3, 12, 30), at(3, 13))  # right after the recovery time

    def test_a_booking_whose_recovery_reaches_the_next_booking_is_refused(self, client, lab, standard):
        later = book(client, lab, standard["id"], at(3, 14), at(3, 15))
        assert [c["id"] for c in self.conflict(client, lab, standard["id"], at(3, 12), at(3, 13, 45))] == [later["id"]]
        book(client, lab, standard["id"], at(3, 12), at(3, 13, 30))  # ends + 30 min recovery = 14:00

    def test_a_pending_request_holds_its_time(self, client, partner, other_partner, standard):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        assert [c["id"] for c in self.conflict(client, other_partner, standard["id"], at(3, 9), at(3, 10))] == [
            pending["id"]]

    def test_a_blackout_is_a_conflict_of_kind_blackout(self, client, lab, standard):
        blackout = client.post(f"/api/v1/standards/{standard['id']}/blackouts", headers=lab, json={
            "starts_at": at(4, 0), "ends_at": at(5, 0), "reason": "送上级计量机构校准"}).get_json()
        conflicts = self.conflict(client, lab, standard["id"], at(3, 20), at(4, 1))
        assert conflicts == [{"kind": "blackout", "id": blackout["id"], "starts_at": utc(4, 0), "ends_at": utc(5, 0),
                              "held_until": utc(5, 0)}]
        book(client, lab, standard["id"], at(5, 0), at(5, 2))  # no recovery after a blackout

    def test_every_overlapped_reservation_is_listed_in_order(self, client, lab, standard):
        a = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        b = book(client, lab, standard["id"], at(3, 11), at(3, 12))
        assert [c["id"] for c in self.conflict(client, lab, standard["id"], at(3, 8), at(3, 11, 30))] == [a["id"],
                                                                                                     b["id"]]

    def test_bookings_of_another_standard_do_not_conflict(self, client, lab, standard, make_standard):
        other = make_standard()
        book(client, lab, standard["id"], at(3, 9), at(3, 10))
        book(client, lab, other["id"], at(3, 9), at(3, 10))

    def test_rejected_and_cancelled_bookings_free_their_time(self, client, lab, partner, standard):
        first = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        client.post(f"/api/v1/bookings/{first['id']}/reject", headers=lab, json={"reason": "设备检修"})
        second = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        client.post(f"/api/v1/bookings/{second['id']}/cancel", headers=partner, json={})
        book(client, lab, standard["id"], at(3, 9), at(3, 10))


# -- reading ---------------------------------------------------------------------------------------

class TestListingBookings:
    @pytest.fixture
    def three(self, client, lab, partner, other_partner, standard, make_standard):
        other_standard = make_standard()
        return {
            "lab": book(client, lab, standard["id"], at(3, 9), at(3, 10)),
            "mine": book(client, partner, standard["id"], at(4, 9), at(4, 10)),
            "theirs": book(client, other_partner, other_standard["id"], at(5, 9), at(5, 10)),
            "standard": standard, "other_standard": other_standard,
        }

    def ids(self, response) -> list[str]:
        assert response.status_code == 200, response.get_json()
        return [b["id"] for b in response.get_json()]

    def test_staff_see_every_booking_in_time_order(self, client, lab, three):
        response = client.get("/api/v1/bookings", headers=lab)
        assert self.ids(response) == [three["lab"]["id"], three["mine"]["id"], three["theirs"]["id"]]
        assert '"total": 3' in response.headers["X-Pagination"]

    def test_a_partner_sees_only_its_organizations_bookings(self, client, partner, token_for, university, three):
        assert self.ids(client.get("/api/v1/bookings", headers=partner)) == [three["mine"]["id"]]
        colleague = token_for("partner", university["id"], client_id="sdu-other-client")
        assert self.ids(client.get("/api/v1/bookings", headers=colleague)) == [three["mine"]["id"]]

    def test_filters_by_standard_status_and_time(self, client, admin, three):
        assert self.ids(client.get(f"/api/v1/bookings?standard_id={three['standard']['id']}", headers=admin)) == [
            three["lab"]["id"], three["mine"]["id"]]
        assert self.ids(client.get("/api/v1/bookings?status=pending", headers=admin)) == [
            three["mine"]["id"], three["theirs"]["id"]]
        window = {"from": at(3, 9, 30), "to": at(4, 9)}
        assert self.ids(client.get("/api/v1/bookings", headers=admin, query_string=window)) == [three["lab"]["id"]]
        window = {"from": at(4, 10)}
        assert self.ids(client.get("/api/v1/bookings", headers=admin, query_string=window)) == [
            three["theirs"]["id"]]

    def test_pages(self, client, lab, three):
        response = client.get("/api/v1/bookings?page=2&page_size=2", headers=lab)
        assert self.ids(response) == [three["theirs"]["id"]]

    @pytest.mark.parametrize("query", [{"from": "2031-03-03T09:00:00"}, {"to": "soon"}, {"status": "done"},
                                       {"from": at(4, 0), "to": at(3, 0)}, {"page_size": 501}])
    def test_bad_filters_are_named(self, client, lab, query):
        response = client.get("/api/v1/bookings", headers=lab, query_string=query)
        assert response.status_code == 422
        assert set(response.get_json()["errors"]) & (set(query) | {"page_size"})

    def test_an_enterprise_may_not_list_bookings(self, client, token_for):
        assert client.get("/api/v1/bookings", headers=token_for("enterprise", "org-x")).status_code == 403

    def test_one_booking_is_seen_by_staff_and_its_organization_only(self, client, lab, partner, other_partner, three):
        url = f"/api/v1/bookings/{three['mine']['id']}"
        assert client.get(url, headers=lab).get_json()["id"] == three["mine"]["id"]
        assert client.get(url, headers=partner).get_json()["id"] == three["mine"]["id"]
        assert client.get(url, headers=other_partner).status_code == 404
        assert client.get(f"/api/v1/bookings/{three['lab']['id']}", headers=partner).status_code == 404

    @pytest.mark.parametrize("booking_id", ["nope", "00000000-0000-0000-0000-000000000000", "x" * 500])
    def test_an_unknown_booking_is_404(self, client, lab, booking_id):
        assert client.get(f"/api/v1/bookings/{booking_id}", headers=lab).status_code == 404


# -- decisions -------------------------------------------------------------------------------------

class TestApproving:
    def test_staff_approve_a_pending_booking(self, client, lab, partner, standard, outbox):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/approve", headers=lab)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "confirmed"
        assert body["decided_by"] == "test-lab_staff"
        assert body["sequence"] == 1
        [event] = outbox("booking.confirmed")
        assert event["data"]["id"] == pending["id"] and event["data"]["sequence"] == 1
        assert event["data"]["requester"]["name"] == "山东大学"

    def test_only_a_pending_booking_can_be_approved(self, client, lab, standard, outbox):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/approve", headers=lab)
        assert response.status_code == 409
        assert response.get_json()["code"] == "invalid_transition"
        assert len(outbox("booking.confirmed")) == 1

    def test_a_partner_cannot_approve(self, client, partner, standard, rows):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        assert client.post(f"/api/v1/bookings/{pending['id']}/approve", headers=partner).status_code == 403
        assert rows()[0].status == "pending"

    def test_approval_checks_the_standard_again(self, client, lab, partner, make_standard, deliver, rows, outbox):
        equipment_id = "55555555-5555-5555-5555-555555555555"
        standard = make_standard(equipment=[{"id": equipment_id, "name": "活塞式压力计", "version": 1,
                                             "due_on": "2032-01-01"}])
        pending = book(client, partner, standard["id"], at(5, 9), at(5, 10))
        # A calibration recorded since then ends sooner (certificate valid until 4 March).
        deliver("equipment.calibrated", payloads.equipment(standard_id=standard["id"], id=equipment_id, version=2,
                                                           due_on=dt.date(2031, 3, 4)))
        response = client.post(f"/api/v1/bookings/{pending['id']}/approve", headers=lab)
        assert response.status_code == 409
        assert response.get_json()["code"] == "standard_unavailable"
        assert response.get_json()["reasons"] == [f"equipment_due:{equipment_id}:2031-03-04"]
        assert rows()[0].status == "pending" and rows()[0].sequence == 0
        assert outbox("booking.confirmed") == []

    def test_an_unknown_booking_cannot_be_approved(self, client, lab):
        assert client.post("/api/v1/bookings/nope/approve", headers=lab).status_code == 404

    def test_a_booking_that_has_ended_cannot_be_approved(self, client, lab, partner, standard, monkeypatch):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        monkeypatch.setattr(service, "clock", lambda: NOW + dt.timedelta(days=2))
        response = client.post(f"/api/v1/bookings/{pending['id']}/approve", headers=lab)
        assert response.status_code == 409
        assert response.get_json()["code"] == "invalid_transition"


class TestRejecting:
    def test_staff_reject_a_pending_booking_with_a_reason(self, client, lab, partner, standard, outbox):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/reject", headers=lab,
                               json={"reason": "该时段已安排检定"})
        assert response.status_code == 200
        body = response.get_json()
        assert (body["status"], body["reason"], body["decided_by"], body["sequence"]) == (
            "rejected", "该时段已安排检定", "test-lab_staff", 1)
        [event] = outbox("booking.rejected")
        assert event["data"]["reason"] == "该时段已安排检定"
        assert event["data"]["requester"]["contacts"][0]["email"] == "zhang@sdu.example.edu.cn"

    @pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": None}, {"reason": 5}])
    def test_a_reason_is_required(self, client, lab, partner, standard, rows, outbox, body):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/reject", headers=lab, json=body)
        assert response.status_code == 422
        assert "reason" in response.get_json()["errors"]
        assert rows()[0].status == "pending" and outbox("booking.rejected") == []

    def test_a_confirmed_booking_cannot_be_rejected(self, client, lab, standard):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/reject", headers=lab, json={"reason": "x"})
        assert response.status_code == 409
        assert response.get_json()["code"] == "invalid_transition"

    def test_a_partner_cannot_reject(self, client, partner, standard):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/reject", headers=partner, json={"reason": "x"})
        assert response.status_code == 403


class TestCancelling:
    def test_a_partner_cancels_its_own_booking(self, client, partner, standard, outbox):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/cancel", headers=partner,
                               json={"reason": "实验计划调整"})
        assert response.status_code == 200
        body = response.get_json()
        assert (body["status"], body["reason"], body["decided_by"], body["sequence"]) == (
            "cancelled", "实验计划调整", "sdu-client", 1)
        [event] = outbox("booking.cancelled")
        assert event["data"]["status"] == "cancelled"

    def test_the_reason_is_optional(self, client, partner, standard):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/cancel", headers=partner)
        assert response.status_code == 200
        assert response.get_json()["reason"] is None

    def test_staff_cancel_any_booking(self, client, lab, admin, partner, standard):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        pending = book(client, partner, standard["id"], at(4, 9), at(4, 10))
        assert client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=admin, json={}).status_code == 200
        assert client.post(f"/api/v1/bookings/{pending['id']}/cancel", headers=lab, json={}).status_code == 200

    def test_a_partner_cannot_cancel_another_organizations_booking(self, client, partner, other_partner, lab,
                                                                    standard, rows):
        theirs = book(client, other_partner, standard["id"], at(3, 9), at(3, 10))
        staff = book(client, lab, standard["id"], at(4, 9), at(4, 10))
        assert client.post(f"/api/v1/bookings/{theirs['id']}/cancel", headers=partner, json={}).status_code == 404
        assert client.post(f"/api/v1/bookings/{staff['id']}/cancel", headers=partner, json={}).status_code == 404
        assert [r.status for r in rows()] == ["pending", "confirmed"]

    def test_a_cancelled_booking_cannot_be_cancelled_again(self, client, lab, standard, outbox):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=lab, json={})
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=lab, json={})
        assert response.status_code == 409
        assert response.get_json()["code"] == "invalid_transition"
        assert len(outbox("booking.cancelled")) == 1

    def test_a_booking_that_has_ended_cannot_be_cancelled(self, client, lab, standard, monkeypatch, rows):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        monkeypatch.setattr(service, "clock", lambda: NOW + dt.timedelta(days=2))
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=lab, json={})
        assert response.status_code == 409
        assert rows()[0].status == "confirmed"

    def test_an_enterprise_cannot_cancel(self, client, lab, token_for, standard):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=token_for("enterprise", "o"))
        assert response.status_code == 403

    def test_an_overlong_reason_is_named(self, client, lab, standard):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{confirmed['id']}/cancel", headers=lab, json={"reason": "x" * 2001})
        assert response.status_code == 422
        assert "reason" in response.get_json()["errors"]


# -- when a standard stops being usable -----------------------------------------------------------------

class TestStandardBecomingUnusable:
    def test_a_status_change_cancels_future_bookings_and_tells_each_requester(
            self, client, lab, partner, standard, deliver, rows, outbox, monkeypatch):
        ended = book(client, lab, standard["id"], at(2, 9), at(2, 10))  # 2 March, 09:00-10:00
        running = book(client, lab, standard["id"], at(2, 11), at(2, 12))
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        pending = book(client, partner, standard["id"], at(4, 9), at(4, 10))
        blackout = client.post(f"/api/v1/standards/{standard['id']}/blackouts", headers=lab, json={
            "starts_at": at(6, 0), "ends_at": at(7, 0), "reason": "维护"}).get_json()
        monkeypatch.setattr(service, "clock", lambda: dt.datetime(2031, 3, 2, 3, 30, tzinfo=dt.UTC))  # 11:30

        deliver("standard.status_changed", payloads.standard(
            id=standard["id"], status="suspended", version=2, recovery_minutes=30,
            certificate_expires_on=CERTIFICATE_OK))

        by_id = {r.id: r for r in rows()}
        assert by_id[ended["id"]].status == "confirmed"
        for booking in (running, confirmed, pending):
            row = by_id[booking["id"]]
            assert (row.status, row.reason, row.decided_by, row.sequence) == (
                "cancelled", "standard_unavailable", "system", 1)
        assert by_id[blackout["id"]].status == "confirmed"
        cancelled = outbox("booking.cancelled")
        assert [e["data"]["id"] for e in cancelled] == [running["id"], confirmed["id"], pending["id"]]
        assert cancelled[2]["data"]["requester"]["name"] == "山东大学"
        assert all(e["data"]["reason"] == "standard_unavailable" for e in cancelled)
        assert cancelled[0]["data"]["custodian_email"] == "custodian@example.com"

    def test_a_replayed_status_change_cancels_nothing_twice(self, client, lab, standard, deliver, outbox):
        book(client, lab, standard["id"], at(3, 9), at(3, 10))
        event = deliver("standard.status_changed", payloads.standard(id=standard["id"], status="sealed", version=2,
                                                                     certificate_expires_on=CERTIFICATE_OK))
        deliver("standard.status_changed", event=event)
        deliver("standard.status_changed", payloads.standard(id=standard["id"], status="retired", version=3,
                                                             certificate_expires_on=CERTIFICATE_OK))
        assert len(outbox("booking.cancelled")) == 1

    def test_expired_certificates_cancel_the_bookings_still_to_come(self, client, lab, make_standard, deliver,
                                                                      scheduler_db, rows, outbox):
        expiring = make_standard(certificate_expires_on=dt.date(2031, 4, 30))
        lasting = make_standard()
        doomed = book(client, lab, expiring["id"], at(10, 9), at(10, 10))
        kept = book(client, lab, lasting["id"], at(10, 9), at(10, 10))
        # The certificate is corrected: it ended on 5 March (the inventory still thinks it usable today).
        deliver("standard.updated", payloads.standard(id=expiring["id"], version=2,
                                                      certificate_expires_on=dt.date(2031, 3, 5)))
        assert outbox("booking.cancelled") == []
        with scheduler_db.transaction() as session:
            assert service.cancel_bookings_of_expired_certificates(
                session, dt.date(2031, 3, 5), now=dt.datetime(2031, 3, 5, 1, tzinfo=dt.UTC)) == 0
        with scheduler_db.transaction() as session:
            assert service.cancel_bookings_of_expired_certificates(
                session, dt.date(2031, 3, 6), now=dt.datetime(2031, 3, 6, 1, tzinfo=dt.UTC)) == 1
        by_id = {r.id: r for r in rows()}
        assert (by_id[doomed["id"]].status, by_id[doomed["id"]].reason) == ("cancelled", "standard_unavailable")
        assert by_id[kept["id"]].status == "confirmed"
        assert [e["data"]["id"] for e in outbox("booking.cancelled")] == [doomed["id"]]
        with scheduler_db.transaction() as session:
            assert service.cancel_bookings_of_expired_certificates(
                session, dt.date(2031, 3, 7), now=dt.datetime(2031, 3, 7, 1, tzinfo=dt.UTC)) == 0


# -- reminders -----------------------------------------------------------------------------------------

class TestReminders:
    @pytest.fixture
    def bookings(self, client, lab, partner, standard):
        return {
            "soon": book(client, lab, standard["id"], at(2, 20), at(2, 21)),        # in 11 hours
            "tomorrow": book(client, lab, standard["id"], at(3, 20), at(3, 21)),    # in 35 hours
            "pending": book(client, partner, standard["id"], at(2, 12), at(2, 13)),
        }

    def remind(self, scheduler_db, now: dt.datetime, hours: int = 24) -> int:
        with scheduler_db.transaction() as session:
            return service.send_booking_reminders(session, now, hours)

    def test_confirmed_bookings_starting_soon_are_reminded_once(self, scheduler_db, bookings, outbox, rows):
        assert self.remind(scheduler_db, NOW) == 1
        assert self.remind(scheduler_db, NOW + dt.timedelta(minutes=5)) == 0
        [event] = outbox("booking.reminder")
        assert event["data"]["id"] == bookings["soon"]["id"]
        assert event["data"]["standard_name"] == "气体流量标准装置"
        assert event["data"]["custodian_email"] == "custodian@example.com"
        row = {r.id: r for r in rows()}[bookings["soon"]["id"]]
        assert row.reminder_sent_at == NOW

    def test_after_downtime_the_reminders_still_in_the_future_go_out(self, scheduler_db, bookings, outbox):
        # The worker was down from before NOW until 3 March 13:00 (Shanghai): "soon" has started by then.
        later = dt.datetime(2031, 3, 3, 5, 0, tzinfo=dt.UTC)
        assert self.remind(scheduler_db, later) == 1
        assert [e["data"]["id"] for e in outbox("booking.reminder")] == [bookings["tomorrow"]["id"]]

    def test_a_reminder_window_of_zero_hours_sends_nothing(self, scheduler_db, bookings, outbox):
        assert self.remind(scheduler_db, NOW, hours=0) == 0
        assert outbox("booking.reminder") == []

    def test_cancelled_bookings_are_not_reminded(self, client, lab, scheduler_db, bookings, outbox):
        client.post(f"/api/v1/bookings/{bookings['soon']['id']}/cancel", headers=lab, json={})
        assert self.remind(scheduler_db, NOW) == 0

    def test_two_workers_at_once_remind_once(self, scheduler_db, bookings, outbox):
        first = scheduler_db.Session()
        try:
            assert service.send_booking_reminders(first, NOW, 24) == 1
            result = {}

            def second_worker():
                with scheduler_db.transaction() as session:
                    result["sent"] = service.send_booking_reminders(session, NOW, 24)

            worker = threading.Thread(target=second_worker)
            worker.start()
            if scheduler_db.is_postgres:
                # It skips the row the first worker holds, without waiting for it.
                worker.join(timeout=20)
                assert not worker.is_alive()
                assert result["sent"] == 0
            first.commit()
            worker.join(timeout=60)
            assert result["sent"] == 0
        finally:
            first.close()
        assert len(outbox("booking.reminder")) == 1


class TestHostileInput:
    @pytest.mark.parametrize("purpose", ["a\x00b", "bell\x07", "\ud800"])
    def test_text_that_cannot_be_stored_is_named(self, client, lab, standard, rows, purpose):
        # Sent as JSON escapes ("\u0000", "\ud800"), as a hostile client would.
        body = json.dumps({"standard_id": standard["id"], "starts_at": at(3, 9), "ends_at": at(3, 10),
                           "purpose": purpose})
        response = client.post("/api/v1/bookings", headers=lab, data=body, content_type="application/json")
        assert response.status_code == 422
        assert "purpose" in response.get_json()["errors"]
        assert rows() == []

    def test_line_breaks_and_tabs_in_a_purpose_are_fine(self, client, lab, standard):
        assert book(client, lab, standard["id"], at(3, 9), at(3, 10), purpose="第一行\n\t第二行")["purpose"] == \
            "第一行\n\t第二行"

    @pytest.mark.parametrize("action", ["reject", "cancel"])
    def test_a_reason_with_a_nul_is_named(self, client, lab, partner, standard, rows, action):
        pending = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        response = client.post(f"/api/v1/bookings/{pending['id']}/{action}", headers=lab, json={"reason": "x\x00"})
        assert response.status_code == 422
        assert "reason" in response.get_json()["errors"]
        assert rows()[0].status == "pending"

    def test_an_id_in_another_spelling_names_the_same_standard_and_booking(self, client, lab, standard):
        body = book(client, lab, standard["id"].upper(), at(3, 9), at(3, 10))
        assert body["standard_id"] == standard["id"]
        assert client.get(f"/api/v1/bookings/{body['id'].upper()}", headers=lab).status_code == 200
        listed = client.get("/api/v1/bookings", headers=lab, query_string={"standard_id": standard["id"].upper()})
        assert [b["id"] for b in listed.get_json()] == [body["id"]]

    @pytest.mark.parametrize("booking_id", ["a%00b", "%F0%9F%98%80", "..%2F..%2Fetc"])
    def test_odd_ids_in_paths_are_404(self, client, lab, booking_id):
        assert client.get(f"/api/v1/bookings/{booking_id}", headers=lab).status_code == 404
        assert client.post(f"/api/v1/bookings/{booking_id}/cancel", headers=lab, json={}).status_code == 404

    @pytest.mark.parametrize("query", [{"standard_id": "a\x00b"}, {"standard_id": "nope"}])
    def test_odd_standard_ids_in_filters_match_nothing(self, client, lab, standard, query):
        book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.get("/api/v1/bookings", headers=lab, query_string=query)
        assert response.status_code == 200
        assert response.get_json() == []

    def test_a_huge_page_number_is_an_empty_page(self, client, lab, standard):
        book(client, lab, standard["id"], at(3, 9), at(3, 10))
        response = client.get("/api/v1/bookings", headers=lab, query_string={"page": 10**15})
        assert response.status_code == 200 and response.get_json() == []
