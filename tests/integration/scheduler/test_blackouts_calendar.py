"""A standard's calendar over HTTP: free time, blackouts, and the iCalendar feed.

Time is frozen at NOW (2031-03-02 09:00 in Shanghai)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from icalendar import Calendar
from sqlalchemy import select

from services.scheduler import bookings as service
from services.scheduler.models import Reservation
from tests.integration.scheduler import payloads

NOW = dt.datetime(2031, 3, 2, 1, 0, tzinfo=dt.UTC)


def at(day: int, hour: int, minute: int = 0) -> str:
    """A timestamp in March 2031, Shanghai time."""
    return f"2031-03-{day:02d}T{hour:02d}:{minute:02d}:00+08:00"


def instant(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(at(day, hour, minute)).astimezone(dt.UTC)


def utc(day: int, hour: int, minute: int = 0) -> str:
    return instant(day, hour, minute).isoformat()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(service, "clock", lambda: NOW)


@pytest.fixture
def make_standard(deliver):
    def make(public: bool = True, **fields) -> dict:
        fields.setdefault("certificate_expires_on", dt.date(2034, 1, 1))
        data = payloads.standard(**fields)
        data["public"] = public
        deliver("standard.registered", data)
        return data

    return make


@pytest.fixture
def standard(make_standard):
    return make_standard(name="压力标准装置", code="SHZB-P-01", recovery_minutes=60)


@pytest.fixture
def university(deliver):
    data = payloads.organization(name="江苏大学", kind="university")
    deliver("organization.registered", data)
    return data


@pytest.fixture
def partner(token_for, university):
    return token_for("partner", university["id"], client_id="ujs-client")


@pytest.fixture
def other_partner(token_for, deliver):
    data = payloads.organization(name="山东省工业技术研究院", kind="institute")
    deliver("organization.registered", data)
    return token_for("partner", data["id"], client_id="other-client")


@pytest.fixture
def enterprise(token_for):
    return token_for("enterprise", "00000000-0000-0000-0000-00000000000e")


@pytest.fixture
def rows(scheduler_db):
    def read() -> list[Reservation]:
        with scheduler_db.Session() as session:
            return list(session.scalars(select(Reservation).order_by(Reservation.starts_at)).all())

    return read


def book(client, headers, standard_id, starts_at, ends_at, purpose="压力表检定") -> dict:
    response = client.post("/api/v1/bookings", headers=headers, json={
        "standard_id": standard_id, "starts_at": starts_at, "ends_at": ends_at, "purpose": purpose})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def black_out(client, headers, standard_id, starts_at, ends_at, reason="送上级计量机构校准"):
    return client.post(f"/api/v1/standards/{standard_id}/blackouts", headers=headers,
                       json={"starts_at": starts_at, "ends_at": ends_at, "reason": reason})


# -- availability ------------------------------------------------------------------------------------

class TestAvailability:
    def free(self, client, headers, standard_id, start, end):
        response = client.get(f"/api/v1/standards/{standard_id}/availability", headers=headers,
                              query_string={"from": start, "to": end})
        assert response.status_code == 200, response.get_json()
        return [(i["starts_at"], i["ends_at"]) for i in response.get_json()]

    def test_free_time_leaves_out_bookings_with_their_recovery_and_blackouts(self, client, lab, partner, standard):
        book(client, lab, standard["id"], at(3, 9), at(3, 10))           # held until 11:00 (recovery)
        book(client, partner, standard["id"], at(3, 14), at(3, 15))      # pending holds too, until 16:00
        assert black_out(client, lab, standard["id"], at(3, 17), at(3, 18)).status_code == 201
        free = self.free(client, partner, standard["id"], at(3, 8), at(3, 20))
        assert free == [(utc(3, 8), utc(3, 9)), (utc(3, 11), utc(3, 14)), (utc(3, 16), utc(3, 17)),
                        (utc(3, 18), utc(3, 20))]

    def test_cancelled_and_rejected_bookings_and_lifted_blackouts_hold_nothing(self, client, lab, partner, standard):
        first = book(client, partner, standard["id"], at(3, 9), at(3, 10))
        client.post(f"/api/v1/bookings/{first['id']}/reject", headers=lab, json={"reason": "时间冲突"})
        second = book(client, lab, standard["id"], at(3, 11), at(3, 12))
        client.post(f"/api/v1/bookings/{second['id']}/cancel", headers=lab, json={})
        blackout = black_out(client, lab, standard["id"], at(3, 13), at(3, 14)).get_json()
        assert client.delete(f"/api/v1/blackouts/{blackout['id']}", headers=lab).status_code == 204
        assert self.free(client, lab, standard["id"], at(3, 8), at(3, 20)) == [(utc(3, 8), utc(3, 20))]

    def test_reservations_straddling_the_window_are_clipped(self, client, lab, standard):
        book(client, lab, standard["id"], at(3, 6), at(3, 9))
        assert self.free(client, lab, standard["id"], at(3, 8), at(3, 12)) == [(utc(3, 10), utc(3, 12))]

    def test_other_standards_do_not_count(self, client, lab, standard, make_standard):
        book(client, lab, make_standard()["id"], at(3, 9), at(3, 10))
        assert self.free(client, lab, standard["id"], at(3, 8), at(3, 12)) == [(utc(3, 8), utc(3, 12))]

    @pytest.mark.parametrize(("query", "field"), [
        ({"to": at(3, 12)}, "from"),
        ({"from": at(3, 8)}, "to"),
        ({"from": "2031-03-03T08:00:00", "to": at(3, 12)}, "from"),
        ({"from": at(3, 8), "to": at(3, 8)}, "to"),
        ({"from": at(1, 0), "to": "2031-06-02T00:00:01+08:00"}, "to"),
        ({"from": "0001-01-01T00:00:00+14:00", "to": at(3, 12)}, "from"),
    ])
    def test_a_bad_window_is_named(self, client, lab, standard, query, field):
        response = client.get(f"/api/v1/standards/{standard['id']}/availability", headers=lab, query_string=query)
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["errors"]

    def test_a_window_of_92_days_is_answered(self, client, lab, standard):
        assert len(self.free(client, lab, standard["id"], at(1, 0), "2031-06-01T00:00:00+08:00")) == 1

    def test_who_may_ask(self, client, admin, lab, partner, enterprise, standard, make_standard):
        url = f"/api/v1/standards/{standard['id']}/availability?from={at(3, 8)}&to={at(3, 9)}".replace("+", "%2B")
        assert client.get(url, headers=admin).status_code == 200
        assert client.get(url, headers=lab).status_code == 200
        assert client.get(url, headers=partner).status_code == 200
        assert client.get(url, headers=enterprise).status_code == 403
        assert client.get(url).status_code == 401
        hidden = make_standard(public=False)
        url = url.replace(standard["id"], hidden["id"])
        assert client.get(url, headers=partner).status_code == 404
        assert client.get(url, headers=lab).status_code == 200

    @pytest.mark.parametrize("standard_id", ["nope", "00000000-0000-0000-0000-000000000000", "x" * 300])
    def test_an_unknown_standard_is_404(self, client, lab, standard_id):
        response = client.get(f"/api/v1/standards/{standard_id}/availability", headers=lab,
                              query_string={"from": at(3, 8), "to": at(3, 9)})
        assert response.status_code == 404


# -- blackouts -----------------------------------------------------------------------------------------

class TestBlackouts:
    def test_staff_black_out_a_standard(self, client, lab, standard, rows, outbox):
        response = black_out(client, lab, standard["id"], at(5, 0), at(8, 0))
        assert response.status_code == 201
        body = response.get_json()
        assert response.headers["Location"].endswith(f"/api/v1/blackouts/{body['id']}")
        assert (body["standard_id"], body["starts_at"], body["ends_at"], body["reason"], body["status"]) == (
            standard["id"], utc(5, 0), utc(8, 0), "送上级计量机构校准", "confirmed")
        assert body["created_by"] == "test-lab_staff"
        assert client.get(response.headers["Location"], headers=lab).get_json() == body
        [row] = rows()
        assert (row.kind, row.held_until) == ("blackout", instant(8, 0))
        assert outbox() == []  # blackouts are not events of the contract

    def test_a_blackout_may_begin_before_now(self, client, admin, standard):
        assert black_out(client, admin, standard["id"], at(1, 0), at(3, 0)).status_code == 201

    def test_blackouts_are_allowed_on_a_standard_out_of_service(self, client, lab, make_standard):
        suspended = make_standard(status="suspended")
        assert black_out(client, lab, suspended["id"], at(5, 0), at(8, 0)).status_code == 201

    def test_a_blackout_over_bookings_is_refused_listing_them(self, client, lab, partner, standard, rows):
        confirmed = book(client, lab, standard["id"], at(5, 9), at(5, 10))
        pending = book(client, partner, standard["id"], at(6, 9), at(6, 10))
        response = black_out(client, lab, standard["id"], at(5, 10, 30), at(7, 0))
        assert response.status_code == 409
        body = response.get_json()
        assert body["code"] == "booking_conflict"
        assert body["conflicts"] == [
            {"kind": "booking", "id": confirmed["id"], "starts_at": utc(5, 9), "ends_at": utc(5, 10),
             "held_until": utc(5, 11)},
            {"kind": "booking", "id": pending["id"], "starts_at": utc(6, 9), "ends_at": utc(6, 10),
             "held_until": utc(6, 11)}]
        assert len(rows()) == 2

    def test_overlapping_blackouts_are_refused_and_back_to_back_ones_are_fine(self, client, lab, standard):
        first = black_out(client, lab, standard["id"], at(5, 0), at(6, 0)).get_json()
        response = black_out(client, lab, standard["id"], at(5, 23), at(7, 0))
        assert response.status_code == 409
        assert [c["id"] for c in response.get_json()["conflicts"]] == [first["id"]]
        assert black_out(client, lab, standard["id"], at(6, 0), at(7, 0)).status_code == 201

    @pytest.mark.parametrize(("changes", "field"), [
        ({"starts_at": "2031-03-05T00:00:00"}, "starts_at"),
        ({"ends_at": at(4, 0)}, "ends_at"),
        ({"starts_at": at(1, 0), "ends_at": at(2, 8)}, "ends_at"),   # over before now
        ({"ends_at": "2032-03-06T00:00:00+08:00"}, "ends_at"),      # longer than 366 days
        ({"starts_at": "2040-01-01T00:00:00+08:00", "ends_at": "2040-01-02T00:00:00+08:00"}, "starts_at"),
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"standard_id": "other"}, "standard_id"),
        ({"status": "cancelled"}, "status"),
    ])
    def test_a_bad_field_is_named_and_nothing_is_written(self, client, lab, standard, rows, changes, field):
        body = {"starts_at": at(5, 0), "ends_at": at(6, 0), "reason": "维护"}
        body.update(changes)
        response = client.post(f"/api/v1/standards/{standard['id']}/blackouts", headers=lab, json=body)
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["errors"]
        assert rows() == []

    def test_a_missing_reason_is_named(self, client, lab, standard, rows):
        response = client.post(f"/api/v1/standards/{standard['id']}/blackouts", headers=lab,
                               json={"starts_at": at(5, 0), "ends_at": at(6, 0)})
        assert response.status_code == 422
        assert "reason" in response.get_json()["errors"]
        assert rows() == []

    def test_only_staff_black_out(self, client, partner, enterprise, standard, rows):
        assert black_out(client, partner, standard["id"], at(5, 0), at(6, 0)).status_code == 403
        assert black_out(client, enterprise, standard["id"], at(5, 0), at(6, 0)).status_code == 403
        assert black_out(client, {}, standard["id"], at(5, 0), at(6, 0)).status_code == 401
        assert rows() == []

    def test_an_unknown_standard_is_404(self, client, lab, rows):
        assert black_out(client, lab, "00000000-0000-0000-0000-000000000000", at(5, 0), at(6, 0)).status_code == 404
        assert rows() == []

    def test_blackouts_are_listed_with_lifted_ones_kept(self, client, lab, partner, enterprise, standard):
        first = black_out(client, lab, standard["id"], at(5, 0), at(6, 0)).get_json()
        second = black_out(client, lab, standard["id"], at(10, 0), at(11, 0)).get_json()
        client.delete(f"/api/v1/blackouts/{first['id']}", headers=lab)
        url = f"/api/v1/standards/{standard['id']}/blackouts"
        listed = client.get(url, headers=partner).get_json()
        assert [(b["id"], b["status"]) for b in listed] == [(first["id"], "cancelled"), (second["id"], "confirmed")]
        assert [b["id"] for b in client.get(url + "?status=confirmed", headers=lab).get_json()] == [second["id"]]
        window = {"from": at(9, 0), "to": at(12, 0)}
        assert [b["id"] for b in client.get(url, headers=lab, query_string=window).get_json()] == [second["id"]]
        assert client.get(url + "?status=nope", headers=lab).status_code == 422
        assert client.get(url, headers=enterprise).status_code == 403

    def test_lifting_a_blackout_keeps_it_and_frees_its_time(self, client, lab, standard, rows):
        blackout = black_out(client, lab, standard["id"], at(5, 0), at(6, 0)).get_json()
        response = client.delete(f"/api/v1/blackouts/{blackout['id']}", headers=lab)
        assert response.status_code == 204
        assert response.data == b""
        [row] = rows()
        assert (row.status, row.sequence, row.decided_by) == ("cancelled", 1, "test-lab_staff")
        book(client, lab, standard["id"], at(5, 9), at(5, 10))
        again = client.delete(f"/api/v1/blackouts/{blackout['id']}", headers=lab)
        assert again.status_code == 204
        assert [r.sequence for r in rows() if r.kind == "blackout"] == [1]

    def test_only_staff_lift_a_blackout(self, client, lab, partner, standard, rows):
        blackout = black_out(client, lab, standard["id"], at(5, 0), at(6, 0)).get_json()
        assert client.delete(f"/api/v1/blackouts/{blackout['id']}", headers=partner).status_code == 403
        assert rows()[0].status == "confirmed"

    @pytest.mark.parametrize("blackout_id", ["nope", "00000000-0000-0000-0000-000000000000"])
    def test_an_unknown_blackout_is_404(self, client, lab, blackout_id):
        assert client.delete(f"/api/v1/blackouts/{blackout_id}", headers=lab).status_code == 404
        assert client.get(f"/api/v1/blackouts/{blackout_id}", headers=lab).status_code == 404

    def test_a_booking_is_not_a_blackout(self, client, lab, standard):
        booking = book(client, lab, standard["id"], at(5, 9), at(5, 10))
        assert client.delete(f"/api/v1/blackouts/{booking['id']}", headers=lab).status_code == 404

    def test_blackouts_of_a_standard_that_is_not_public_are_hidden_from_partners(self, client, lab, partner,
                                                                                  make_standard):
        hidden = make_standard(public=False)
        blackout = black_out(client, lab, hidden["id"], at(5, 0), at(6, 0)).get_json()
        assert client.get(f"/api/v1/standards/{hidden['id']}/blackouts", headers=partner).status_code == 404
        assert client.get(f"/api/v1/blackouts/{blackout['id']}", headers=partner).status_code == 404


# -- iCalendar feed ------------------------------------------------------------------------------------

def feed(client, headers, standard_id) -> Calendar:
    response = client.get(f"/api/v1/standards/{standard_id}/calendar.ics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/calendar"
    return Calendar.from_ical(response.data)


def events_by_uid(calendar: Calendar) -> dict:
    return {str(event["UID"]): event for event in calendar.walk("VEVENT")}


class TestCalendarFeed:
    def test_the_feed_is_a_valid_calendar_of_the_standard(self, client, lab, standard):
        calendar = feed(client, lab, standard["id"])
        assert str(calendar["VERSION"]) == "2.0"
        assert "refstd" in str(calendar["PRODID"])
        assert str(calendar["X-WR-CALNAME"]) == "SHZB-P-01 压力标准装置"
        assert calendar.decoded("REFRESH-INTERVAL") == dt.timedelta(hours=1)
        assert "METHOD" not in calendar  # a published feed, not an invitation
        assert calendar.walk("VEVENT") == []

    def test_each_reservation_is_an_event_with_status_and_utc_times(self, client, lab, partner, standard):
        confirmed = book(client, lab, standard["id"], at(3, 9), at(3, 10), purpose="期间核查")
        pending = book(client, partner, standard["id"], at(4, 9), at(4, 10), purpose="膜渗透率测试")
        blackout = black_out(client, lab, standard["id"], at(6, 0), at(7, 0), reason="年度维护").get_json()
        events = events_by_uid(feed(client, lab, standard["id"]))
        assert set(events) == {f"{confirmed['id']}@refstd", f"{pending['id']}@refstd", f"{blackout['id']}@refstd"}
        event = events[f"{confirmed['id']}@refstd"]
        assert (str(event["STATUS"]), str(event["SUMMARY"]), int(event["SEQUENCE"])) == ("CONFIRMED", "期间核查", 0)
        assert event.decoded("DTSTART") == instant(3, 9)
        assert event.decoded("DTEND") == instant(3, 10)
        assert event.decoded("DTSTART").utcoffset() == dt.timedelta(0)
        assert "DTSTAMP" in event and "LAST-MODIFIED" in event
        assert str(events[f"{pending['id']}@refstd"]["STATUS"]) == "TENTATIVE"
        blackout_event = events[f"{blackout['id']}@refstd"]
        assert (str(blackout_event["STATUS"]), str(blackout_event["SUMMARY"])) == ("CONFIRMED", "年度维护")

    def test_uids_stay_and_sequence_grows_through_approval_and_cancellation(self, client, lab, partner, standard):
        pending = book(client, partner, standard["id"], at(4, 9), at(4, 10))
        uid = f"{pending['id']}@refstd"
        before = events_by_uid(feed(client, lab, standard["id"]))[uid]
        assert (str(before["STATUS"]), int(before["SEQUENCE"])) == ("TENTATIVE", 0)
        client.post(f"/api/v1/bookings/{pending['id']}/approve", headers=lab)
        approved = events_by_uid(feed(client, lab, standard["id"]))[uid]
        assert (str(approved["STATUS"]), int(approved["SEQUENCE"])) == ("CONFIRMED", 1)
        client.post(f"/api/v1/bookings/{pending['id']}/cancel", headers=partner, json={"reason": "改期"})
        cancelled = events_by_uid(feed(client, lab, standard["id"]))[uid]
        assert (str(cancelled["STATUS"]), int(cancelled["SEQUENCE"])) == ("CANCELLED", 2)

    def test_rejected_bookings_are_left_out_and_lifted_blackouts_are_cancelled(self, client, lab, partner, standard):
        rejected = book(client, partner, standard["id"], at(4, 9), at(4, 10))
        client.post(f"/api/v1/bookings/{rejected['id']}/reject", headers=lab, json={"reason": "不可用"})
        blackout = black_out(client, lab, standard["id"], at(6, 0), at(7, 0)).get_json()
        client.delete(f"/api/v1/blackouts/{blackout['id']}", headers=lab)
        events = events_by_uid(feed(client, lab, standard["id"]))
        assert list(events) == [f"{blackout['id']}@refstd"]
        lifted = events[f"{blackout['id']}@refstd"]
        assert (str(lifted["STATUS"]), int(lifted["SEQUENCE"])) == ("CANCELLED", 1)

    def test_reservations_ended_over_30_days_ago_leave_the_feed(self, client, lab, standard, monkeypatch):
        old = book(client, lab, standard["id"], at(3, 9), at(3, 10))
        monkeypatch.setattr(service, "clock", lambda: instant(3, 10) + dt.timedelta(days=30, seconds=1))
        assert f"{old['id']}@refstd" not in events_by_uid(feed(client, lab, standard["id"]))
        monkeypatch.setattr(service, "clock", lambda: instant(3, 10) + dt.timedelta(days=29))
        assert f"{old['id']}@refstd" in events_by_uid(feed(client, lab, standard["id"]))

    def test_a_partner_sees_other_bookings_as_busy_only(self, client, lab, partner, other_partner, standard):
        mine = book(client, partner, standard["id"], at(4, 9), at(4, 10), purpose="燃料电池膜测试")
        theirs = book(client, other_partner, standard["id"], at(5, 9), at(5, 10), purpose="机密项目")
        staff = book(client, lab, standard["id"], at(6, 9), at(6, 10), purpose="内部核查")
        events = events_by_uid(feed(client, partner, standard["id"]))
        assert str(events[f"{mine['id']}@refstd"]["SUMMARY"]) == "燃料电池膜测试"
        assert str(events[f"{theirs['id']}@refstd"]["SUMMARY"]) == "已预约 Booked"
        assert str(events[f"{staff['id']}@refstd"]["SUMMARY"]) == "已预约 Booked"
        assert str(events_by_uid(feed(client, lab, standard["id"]))[f"{theirs['id']}@refstd"]["SUMMARY"]) == "机密项目"

    def test_an_unchanged_feed_answers_304_to_its_etag(self, client, lab, standard):
        url = f"/api/v1/standards/{standard['id']}/calendar.ics"
        book(client, lab, standard["id"], at(3, 9), at(3, 10))
        first = client.get(url, headers=lab)
        etag = first.headers["ETag"]
        assert client.get(url, headers=lab).headers["ETag"] == etag
        assert client.get(url, headers={**lab, "If-None-Match": etag}).status_code == 304
        book(client, lab, standard["id"], at(4, 9), at(4, 10))
        changed = client.get(url, headers={**lab, "If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag

    def test_who_may_read_the_feed(self, client, admin, partner, enterprise, standard, make_standard):
        url = f"/api/v1/standards/{standard['id']}/calendar.ics"
        assert client.get(url, headers=admin).status_code == 200
        assert client.get(url, headers=partner).status_code == 200
        assert client.get(url, headers=enterprise).status_code == 403
        assert client.get(url).status_code == 401
        hidden = make_standard(public=False)
        assert client.get(f"/api/v1/standards/{hidden['id']}/calendar.ics", headers=partner).status_code == 404
        assert client.get("/api/v1/standards/nope/calendar.ics", headers=admin).status_code == 404


class TestHostileInput:
    @pytest.mark.parametrize("reason", ["a\x00b", "\ud800"])
    def test_a_blackout_reason_that_cannot_be_stored_is_named(self, client, lab, standard, rows, reason):
        body = json.dumps({"starts_at": at(5, 0), "ends_at": at(6, 0), "reason": reason})  # JSON escapes
        response = client.post(f"/api/v1/standards/{standard['id']}/blackouts", headers=lab, data=body,
                               content_type="application/json")
        assert response.status_code == 422
        assert "reason" in response.get_json()["errors"]
        assert rows() == []

    @pytest.mark.parametrize("standard_id", ["a%00b", "%F0%9F%98%80"])
    def test_odd_standard_ids_in_paths_are_404(self, client, lab, standard_id):
        assert client.get(f"/api/v1/standards/{standard_id}/calendar.ics", headers=lab).status_code == 404
        assert client.get(f"/api/v1/standards/{standard_id}/blackouts", headers=lab).status_code == 404
        assert black_out(client, lab, standard_id, at(5, 0), at(6, 0)).status_code == 404
        assert client.delete(f"/api/v1/blackouts/{standard_id}", headers=lab).status_code == 404

    def test_a_reminder_does_not_touch_the_feed(self, client, lab, standard, scheduler_db):
        book(client, lab, standard["id"], at(2, 20), at(2, 21))
        url = f"/api/v1/standards/{standard['id']}/calendar.ics"
        etag = client.get(url, headers=lab).headers["ETag"]
        with scheduler_db.transaction() as session:
            assert service.send_booking_reminders(session, NOW, 24) == 1
        assert client.get(url, headers={**lab, "If-None-Match": etag}).status_code == 304
