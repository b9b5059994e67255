"""Booking rules without a database: held time, conflicts, availability, transitions, and the reasons a
standard cannot be booked, at the institute zone's day boundaries."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain import bookings as rules

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2031, 3, 2, 1, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: int = 2) -> dt.datetime:
    return dt.datetime(2031, 3, day, hour, minute, tzinfo=UTC)


def booking(id: str, start: dt.datetime, end: dt.datetime, recovery: int = 0) -> rules.Hold:
    return rules.Hold("booking", id, start, end, rules.held_until("booking", end, recovery))


def blackout(id: str, start: dt.datetime, end: dt.datetime) -> rules.Hold:
    return rules.Hold("blackout", id, start, end, rules.held_until("blackout", end, 90))


class TestHeldTimeAndConflicts:
    def test_a_booking_holds_its_standard_for_the_recovery_time_after_it_ends(self):
        assert rules.held_until("booking", at(10), 30) == at(10, 30)

    def test_a_blackout_holds_no_recovery_time(self):
        assert rules.held_until("blackout", at(10), 30) == at(10)

    def test_back_to_back_reservations_do_not_conflict(self):
        existing = [booking("a", at(8), at(10))]
        assert rules.conflicts(at(10), at(12), existing) == []
        assert rules.conflicts(at(6), at(8), existing) == []

    def test_a_booking_starting_inside_the_recovery_time_of_another_conflicts(self):
        existing = [booking("a", at(8), at(10), recovery=30)]
        assert [h.id for h in rules.conflicts(at(10, 15), at(11), existing)] == ["a"]
        assert rules.conflicts(at(10, 30), at(11), existing) == []

    def test_a_booking_whose_own_recovery_reaches_into_the_next_one_conflicts(self):
        existing = [booking("next", at(12), at(13))]
        until = rules.held_until("booking", at(11, 45), 30)
        assert [h.id for h in rules.conflicts(at(11), until, existing)] == ["next"]
        assert rules.conflicts(at(11), rules.held_until("booking", at(11, 30), 30), existing) == []

    def test_every_overlapping_hold_is_listed_earliest_first(self):
        existing = [blackout("late", at(14), at(15)), booking("early", at(9), at(10)), booking("out", at(16), at(17))]
        assert [h.id for h in rules.conflicts(at(9, 30), at(14, 30), existing)] == ["early", "late"]

    def test_a_reservation_does_not_conflict_with_itself(self):
        existing = [booking("a", at(8), at(10))]
        assert rules.conflicts(at(8), at(10), existing, ignore_id="a") == []


class TestAvailability:
    def test_free_time_is_the_window_minus_held_time(self):
        free = rules.free_intervals(at(8), at(18), [(at(9), at(10, 30)), (at(13), at(14))])
        assert free == [(at(8), at(9)), (at(10, 30), at(13)), (at(14), at(18))]

    def test_overlapping_and_touching_holds_merge(self):
        free = rules.free_intervals(at(8), at(18), [(at(9), at(11)), (at(10), at(12)), (at(12), at(13))])
        assert free == [(at(8), at(9)), (at(13), at(18))]

    def test_holds_beyond_the_window_are_clipped(self):
        free = rules.free_intervals(at(8), at(18), [(at(6), at(9)), (at(17), at(20))])
        assert free == [(at(9), at(17))]

    def test_a_fully_held_window_has_no_free_time(self):
        assert rules.free_intervals(at(8), at(18), [(at(7), at(19))]) == []

    def test_an_empty_calendar_is_free_all_window(self):
        assert rules.free_intervals(at(8), at(18), []) == [(at(8), at(18))]

    def test_a_window_wider_than_92_days_is_refused_naming_to(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_window(at(0), at(0) + dt.timedelta(days=92, seconds=1))
        assert set(caught.value.errors) == {"to"}
        assert rules.check_window(at(0), at(0) + dt.timedelta(days=92))

    def test_a_window_ending_before_it_starts_is_refused(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_window(at(10), at(10))
        assert set(caught.value.errors) == {"to"}


class TestRequestedTimes:
    def test_naive_timestamps_are_refused_naming_each_field(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_booking_times(dt.datetime(2031, 3, 3, 9), dt.datetime(2031, 3, 3, 10), NOW)
        assert set(caught.value.errors) == {"starts_at", "ends_at"}

    def test_times_are_returned_in_utc(self):
        starts, ends = rules.check_booking_times(dt.datetime(2031, 3, 3, 9, tzinfo=SHANGHAI),
                                                 dt.datetime(2031, 3, 3, 10, tzinfo=SHANGHAI), NOW)
        assert (starts, ends) == (at(1, day=3), at(2, day=3))
        assert starts.tzinfo == UTC

    def test_ends_at_not_after_starts_at_is_refused_naming_ends_at(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_booking_times(at(10, day=3), at(10, day=3), NOW)
        assert caught.value.errors.keys() == {"ends_at"}

    def test_a_booking_starting_in_the_past_is_refused(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_booking_times(NOW - dt.timedelta(seconds=1), NOW + dt.timedelta(hours=1), NOW)
        assert caught.value.errors.keys() == {"starts_at"}
        assert rules.check_booking_times(NOW, NOW + dt.timedelta(hours=1), NOW)

    def test_a_booking_lasts_at_most_31_days(self):
        rules.check_booking_times(at(2, day=3), at(2, day=3) + dt.timedelta(days=31), NOW)
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_booking_times(at(2, day=3), at(2, day=3) + dt.timedelta(days=31, seconds=1), NOW)
        assert caught.value.errors.keys() == {"ends_at"}

    def test_a_booking_starts_at_most_five_years_ahead(self):
        with pytest.raises(rules.InvalidTimes) as caught:
            far = NOW + rules.BOOKING_HORIZON + dt.timedelta(seconds=1)
            rules.check_booking_times(far, far + dt.timedelta(hours=1), NOW)
        assert caught.value.errors.keys() == {"starts_at"}

    def test_a_timestamp_outside_the_calendar_in_utc_is_refused_not_crashed_on(self):
        first = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14)))
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_booking_times(first, at(10), NOW)
        assert caught.value.errors.keys() == {"starts_at"}

    def test_a_blackout_may_have_begun_but_not_ended(self):
        rules.check_blackout_times(NOW - dt.timedelta(days=1), NOW + dt.timedelta(hours=1), NOW)
        with pytest.raises(rules.InvalidTimes) as caught:
            rules.check_blackout_times(NOW - dt.timedelta(days=1), NOW, NOW)
        assert caught.value.errors.keys() == {"ends_at"}


class TestWhoMayBookAndWhatFollows:
    @pytest.mark.parametrize(("role", "status"), [("admin", "confirmed"), ("lab_staff", "confirmed"),
                                                  ("partner", "pending"), ("enterprise", None)])
    def test_the_initial_status_depends_on_the_role(self, role, status):
        assert rules.initial_status(role) == status

    @pytest.mark.parametrize(("status", "action", "after"), [
        ("pending", "approve", "confirmed"), ("pending", "reject", "rejected"),
        ("pending", "cancel", "cancelled"), ("confirmed", "cancel", "cancelled")])
    def test_allowed_transitions(self, status, action, after):
        assert rules.transition(status, action) == after

    @pytest.mark.parametrize(("status", "action"), [
        ("confirmed", "approve"), ("confirmed", "reject"), ("rejected", "approve"), ("rejected", "cancel"),
        ("cancelled", "approve"), ("cancelled", "cancel"), ("cancelled", "reject")])
    def test_other_transitions_are_refused(self, status, action):
        with pytest.raises(rules.InvalidTransition) as caught:
            rules.transition(status, action)
        assert caught.value.status == status

    def test_a_booking_belongs_to_the_callers_organization(self):
        assert rules.is_own("client-1", "org-a", "client-2", "org-a")
        assert not rules.is_own("client-1", "org-a", "client-1", "org-b")

    def test_without_an_organization_a_booking_belongs_to_its_client(self):
        assert rules.is_own("client-1", None, "client-1", None)
        assert not rules.is_own("client-1", None, "client-2", None)


def reasons(ends_at: dt.datetime, *, bookable=True, status="in_service",
            certificate_expires_on: dt.date | None = dt.date(2034, 1, 1), equipment=()) -> list[str]:
    return rules.unavailability_reasons(bookable=bookable, status=status,
                                        certificate_expires_on=certificate_expires_on,
                                        equipment=equipment, ends_at=ends_at, zone=SHANGHAI)


class TestUnavailabilityReasons:
    def test_a_usable_bookable_standard_has_no_reason(self):
        assert reasons(at(10)) == []

    def test_not_bookable_and_not_in_service_are_named(self):
        assert reasons(at(10), bookable=False, status="sealed") == ["not_bookable", "status_sealed"]

    def test_a_certificate_valid_through_a_day_covers_bookings_ending_by_shanghai_midnight(self):
        # Valid through 2031-06-30: usable until 2031-07-01 00:00 in Shanghai = 2031-06-30 16:00 UTC.
        expires = dt.date(2031, 6, 30)
        midnight = dt.datetime(2031, 6, 30, 16, 0, tzinfo=UTC)
        assert reasons(midnight, certificate_expires_on=expires) == []
        assert reasons(midnight + dt.timedelta(minutes=1), certificate_expires_on=expires) == [
            "assessment_certificate_expires:2031-06-30"]

    def test_the_boundary_is_local_midnight_not_utc_midnight(self):
        # 2031-06-30 20:00 UTC is already 1 July in Shanghai: past the certificate's last day.
        assert reasons(dt.datetime(2031, 6, 30, 20, 0, tzinfo=UTC), certificate_expires_on=dt.date(2031, 6, 30)) \
            == ["assessment_certificate_expires:2031-06-30"]

    def test_a_missing_certificate_is_named(self):
        assert reasons(at(10), certificate_expires_on=None) == ["assessment_certificate_missing"]

    def test_equipment_due_before_the_booking_ends_is_named_with_its_date(self):
        due = dt.date(2031, 3, 2)
        midnight = dt.datetime(2031, 3, 2, 16, 0, tzinfo=UTC)
        assert reasons(midnight, equipment=[("eq-1", due)]) == []
        assert reasons(midnight + dt.timedelta(seconds=1), equipment=[("eq-1", due)]) == [
            "equipment_due:eq-1:2031-03-02"]

    def test_equipment_never_calibrated_is_named_and_listed_by_id(self):
        found = reasons(at(10), equipment=[("eq-b", None), ("eq-a", dt.date(2031, 3, 1))])
        assert found == ["equipment_due:eq-a:2031-03-01", "equipment_never_calibrated:eq-b"]

    def test_every_failing_condition_is_named_in_order(self):
        found = reasons(at(20, day=3), bookable=False, status="suspended",
                        certificate_expires_on=dt.date(2031, 3, 3), equipment=[("e", None)])
        assert found == ["not_bookable", "status_suspended", "assessment_certificate_expires:2031-03-03",
                         "equipment_never_calibrated:e"]

    def test_a_naive_end_is_refused(self):
        with pytest.raises(rules.InvalidTimes):
            reasons(dt.datetime(2031, 3, 2, 10))
