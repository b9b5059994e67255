"""Equipment of the standards and its calibrations: due dates, corrections, and what the standard's
usability becomes."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from services.inventory.models import Calibration, Equipment
from shared.timeutil import add_months, institute_today

API = "/api/v1"
PROBLEM = "application/problem+json"


@pytest.fixture
def today(app):
    return institute_today()


@pytest.fixture
def rows(inventory_db):
    def count(model) -> int:
        with inventory_db.Session() as session:
            return session.scalar(select(func.count()).select_from(model))

    return count


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    for field in fields:
        assert field in body.get("errors", {}), body
    return body


def role_headers(token_for, orgs, role: str) -> dict:
    if role == "none":
        return {}
    if role == "enterprise":
        return token_for("enterprise", orgs["a"])
    if role == "partner":
        return token_for("partner", orgs["university"])
    return token_for(role)


@pytest.fixture
def standard(client, admin, today):
    body = {
        "code": "ZB-P-001",
        "name": "压力标准装置",
        "discipline": "mechanical",
        "measurand": "pressure",
        "range": {"min": 0, "max": 60, "unit": "MPa"},
        "assessment_certificate": {"issued_on": (today - dt.timedelta(days=100)).isoformat()},
    }
    response = client.post(f"{API}/standards", json=body, headers=admin)
    assert response.status_code == 201
    return response.get_json()


@pytest.fixture
def equip(client, admin):
    def make(standard_id: str, **fields) -> dict:
        body = {
            "role": "main",
            "name": "活塞式压力计",
            "manufacturer": "示例仪器厂",
            "model": "YS-60",
            "serial_number": "SN-001",
            "calibration_interval_months": 12,
            **fields,
        }
        response = client.post(f"{API}/standards/{standard_id}/equipment", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


@pytest.fixture
def calibrate(client, admin):
    def make(equipment_id: str, calibrated_on: dt.date, expect: int = 201, **fields):
        body = {"calibrated_on": calibrated_on.isoformat(), "result": "pass", **fields}
        response = client.post(f"{API}/equipment/{equipment_id}/calibrations", json=body, headers=admin)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    return make


def read(client, headers, url: str) -> dict:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- registering equipment ------------------------------------------------------------------------


class TestRegisteringEquipment:
    def test_answers_201_with_never_calibrated_equipment(self, client, admin, standard):
        response = client.post(
            f"{API}/standards/{standard['id']}/equipment",
            headers=admin,
            json={"role": "auxiliary", "name": "数字压力计", "calibration_interval_months": 6},
        )
        assert response.status_code == 201
        equipment = response.get_json()
        assert response.headers["Location"] == f"{API}/equipment/{equipment['id']}"
        assert response.headers["ETag"] == f'"{equipment["version"]}"'
        assert equipment["standard_id"] == standard["id"]
        assert equipment["role"] == "auxiliary"
        assert equipment["last_calibrated_on"] is None and equipment["due_on"] is None
        assert equipment["state"] == "never_calibrated"
        assert read(client, admin, response.headers["Location"]) == equipment
        assert read(client, admin, f"{API}/standards/{standard['id']}/equipment") == [equipment]

    def test_the_events_show_that_the_standard_became_unusable(self, client, admin, standard, equip, outbox):
        assert standard["usable"] is True
        equipment = equip(standard["id"])
        reason = f"equipment_never_calibrated:{equipment['id']}"

        [registered] = outbox("equipment.registered")
        assert registered["subject"] == equipment["id"]
        data = registered["data"]
        assert data["id"] == equipment["id"] and data["standard_id"] == standard["id"]
        assert data["name"] == "活塞式压力计" and data["serial_number"] == "SN-001"
        assert data["state"] == "never_calibrated" and data["due_on"] is None
        assert data["version"] == equipment["version"]
        assert data["standard_usable"] is False
        assert data["standard_blocking_reasons"] == [reason]

        [updated] = outbox("standard.updated")
        assert updated["subject"] == standard["id"]
        assert updated["data"]["usable"] is False
        assert updated["data"]["blocking_reasons"] == [reason]
        assert [e["id"] for e in updated["data"]["equipment"]] == [equipment["id"]]
        assert updated["data"]["version"] == standard["version"] + 1
        now = read(client, admin, f"{API}/standards/{standard['id']}")
        assert now["version"] == updated["data"]["version"]
        assert now["blocking_reasons"] == [reason]

    def test_a_second_never_calibrated_piece_adds_its_own_reason(
        self, client, admin, standard, equip, outbox
    ):
        first = equip(standard["id"])
        second = equip(standard["id"], serial_number="SN-002")
        expected = sorted(
            [f"equipment_never_calibrated:{first['id']}", f"equipment_never_calibrated:{second['id']}"]
        )
        assert outbox("equipment.registered")[-1]["data"]["standard_blocking_reasons"] == expected
        assert outbox("standard.updated")[-1]["data"]["blocking_reasons"] == expected

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"role": "spare"}, "role"),
            ({"name": ""}, "name"),
            ({"name": None}, "name"),
            ({"calibration_interval_months": 0}, "calibration_interval_months"),
            ({"calibration_interval_months": 10**40}, "calibration_interval_months"),
            ({"calibration_interval_months": 1e400}, "calibration_interval_months"),
            ({"calibration_interval_months": "often"}, "calibration_interval_months"),
            ({"due_on": "2030-01-01"}, "due_on"),
            ({"state": "ok"}, "state"),
            ({"colour": "red"}, "colour"),
            ({"serial_number": "a\u0000b"}, "serial_number"),
            ({"model": "m" * 101}, "model"),
        ],
    )
    def test_refuses_bad_input_and_writes_nothing(self, client, admin, standard, rows, outbox, change, field):
        body = {"role": "main", "name": "x", "calibration_interval_months": 12, **change}
        response = client.post(f"{API}/standards/{standard['id']}/equipment", json=body, headers=admin)
        assert_problem(response, 422, field)
        assert rows(Equipment) == 0
        assert [e["type"] for e in outbox()] == ["refstd.inventory.standard.registered"]

    def test_a_body_that_is_not_json_is_400(self, client, admin, standard, rows):
        response = client.post(
            f"{API}/standards/{standard['id']}/equipment",
            data="{role: main",
            content_type="application/json",
            headers=admin,
        )
        assert_problem(response, 400)
        assert rows(Equipment) == 0

    def test_an_unknown_standard_is_404(self, client, admin, rows):
        response = client.post(
            f"{API}/standards/missing/equipment", json={"role": "main", "name": "x"}, headers=admin
        )
        assert_problem(response, 404)
        assert_problem(client.get(f"{API}/standards/missing/equipment", headers=admin), 404)
        assert rows(Equipment) == 0

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 201), ("lab_staff", 201), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_keep_equipment(self, client, standard, token_for, orgs, rows, role, status):
        headers = role_headers(token_for, orgs, role)
        response = client.post(
            f"{API}/standards/{standard['id']}/equipment", json={"role": "main", "name": "x"}, headers=headers
        )
        assert response.status_code == status
        assert rows(Equipment) == (1 if status == 201 else 0)
        listed = client.get(f"{API}/standards/{standard['id']}/equipment", headers=headers)
        assert listed.status_code == (200 if status == 201 else status)
        if status == 201:
            one = client.get(response.headers["Location"], headers=headers)
            assert one.status_code == 200


# --- reading and changing equipment -----------------------------------------------------------------


class TestChangingEquipment:
    def test_reads_with_an_etag_and_404s_unknown_ids(self, client, admin, standard, equip):
        equipment = equip(standard["id"])
        response = client.get(f"{API}/equipment/{equipment['id']}", headers=admin)
        assert response.headers["ETag"] == f'"{equipment["version"]}"'
        for bad in ("00000000-0000-4000-8000-000000000000", "y" * 300, "a%00"):
            assert_problem(client.get(f"{API}/equipment/{bad}", headers=admin), 404)
            assert_problem(client.get(f"{API}/equipment/{bad}/calibrations", headers=admin), 404)

    def test_changes_fields_and_publishes(self, client, admin, standard, equip, outbox):
        equipment = equip(standard["id"])
        response = client.patch(
            f"{API}/equipment/{equipment['id']}",
            json={"model": "YS-600", "role": "auxiliary"},
            headers={**admin, "If-Match": f'"{equipment["version"]}"'},
        )
        assert response.status_code == 200
        patched = response.get_json()
        assert patched["model"] == "YS-600" and patched["role"] == "auxiliary"
        assert patched["name"] == equipment["name"]
        assert patched["version"] == equipment["version"] + 1
        assert response.headers["ETag"] == f'"{patched["version"]}"'
        [event] = outbox("equipment.updated")
        assert event["data"]["model"] == "YS-600"
        assert event["data"]["version"] == patched["version"]
        assert event["data"]["standard_usable"] is False
        assert event["data"]["standard_blocking_reasons"] == [f"equipment_never_calibrated:{equipment['id']}"]
        assert len(outbox("standard.updated")) == 1  # only the registration changed the standard

    def test_a_stale_if_match_is_412_and_changes_nothing(self, client, admin, standard, equip, outbox):
        equipment = equip(standard["id"])
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"model": "new"}, headers={**admin, "If-Match": '"41"'}
        )
        assert_problem(response, 412)
        assert read(client, admin, f"{API}/equipment/{equipment['id']}") == equipment
        assert outbox("equipment.updated") == []

    def test_a_new_interval_recomputes_due_on_from_the_latest_calibration(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrated_on = today - dt.timedelta(days=40)
        calibrate(equipment["id"], calibrated_on)
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"calibration_interval_months": 24}, headers=admin
        )
        assert response.status_code == 200
        assert response.get_json()["due_on"] == add_months(calibrated_on, 24).isoformat()
        assert outbox("equipment.updated")[-1]["data"]["due_on"] == add_months(calibrated_on, 24).isoformat()
        stored = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert stored["due_on"] == add_months(calibrated_on, 24).isoformat()
        assert (
            stored["version"] == response.get_json()["version"] == equipment["version"] + 2
        )  # calibrated, patched

    def test_a_new_interval_of_never_calibrated_equipment_is_kept(
        self, client, admin, standard, equip, outbox
    ):
        equipment = equip(standard["id"])
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"calibration_interval_months": 6}, headers=admin
        )
        assert response.status_code == 200
        stored = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert stored["calibration_interval_months"] == 6
        assert stored["due_on"] is None and stored["state"] == "never_calibrated"
        assert stored["version"] == equipment["version"] + 1
        assert outbox("equipment.updated")[-1]["data"]["calibration_interval_months"] == 6

    def test_an_unchanged_value_publishes_nothing(self, client, admin, standard, equip, outbox):
        equipment = equip(standard["id"])
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"name": equipment["name"]}, headers=admin
        )
        assert response.status_code == 200
        assert response.get_json()["version"] == equipment["version"]
        assert outbox("equipment.updated") == []

    def test_a_shorter_interval_can_make_the_standard_unusable(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrate(equipment["id"], today - dt.timedelta(days=100))
        assert read(client, admin, f"{API}/standards/{standard['id']}")["usable"] is True
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"calibration_interval_months": 1}, headers=admin
        )
        assert response.get_json()["state"] == "overdue"
        event = outbox("equipment.updated")[-1]
        assert event["data"]["standard_usable"] is False
        assert event["data"]["standard_blocking_reasons"] == [f"equipment_overdue:{equipment['id']}"]
        assert outbox("standard.updated")[-1]["data"]["blocking_reasons"] == [
            f"equipment_overdue:{equipment['id']}"
        ]

    def test_valid_until_still_wins_over_a_new_interval(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        valid_until = today + dt.timedelta(days=200)
        calibrate(equipment["id"], today - dt.timedelta(days=5), valid_until=valid_until.isoformat())
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"calibration_interval_months": 3}, headers=admin
        )
        assert response.get_json()["due_on"] == valid_until.isoformat()

    def test_removing_the_interval_keeps_the_recorded_due_date(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        calibration = calibrate(equipment["id"], today - dt.timedelta(days=5))
        response = client.patch(
            f"{API}/equipment/{equipment['id']}", json={"calibration_interval_months": None}, headers=admin
        )
        assert response.status_code == 200
        assert response.get_json()["due_on"] == calibration["next_due_on"]
        assert response.get_json()["calibration_interval_months"] is None

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"calibration_interval_months": -3}, "calibration_interval_months"),
            ({"due_on": "2030-01-01"}, "due_on"),
            ({"standard_id": "other"}, "standard_id"),
            ({"role": None}, "role"),
            ({"x": 1}, "x"),
        ],
    )
    def test_refuses_bad_changes(self, client, admin, standard, equip, outbox, change, field):
        equipment = equip(standard["id"])
        response = client.patch(f"{API}/equipment/{equipment['id']}", json=change, headers=admin)
        assert_problem(response, 422, field)
        assert read(client, admin, f"{API}/equipment/{equipment['id']}") == equipment
        assert outbox("equipment.updated") == []

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 200), ("lab_staff", 200), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_read_and_change_equipment(
        self, client, standard, equip, token_for, orgs, role, status
    ):
        equipment = equip(standard["id"])
        headers = role_headers(token_for, orgs, role)
        assert client.get(f"{API}/equipment/{equipment['id']}", headers=headers).status_code == status
        response = client.patch(f"{API}/equipment/{equipment['id']}", json={"model": "M"}, headers=headers)
        assert response.status_code == status


# --- calibrations -------------------------------------------------------------------------------------


class TestRecordingCalibrations:
    def test_records_a_calibration_and_the_standard_becomes_usable(
        self, client, token_for, standard, equip, today, outbox
    ):
        lab = token_for("lab_staff", client_id="lab-chen")
        equipment = equip(standard["id"])
        calibrated_on = today - dt.timedelta(days=20)
        response = client.post(
            f"{API}/equipment/{equipment['id']}/calibrations",
            headers=lab,
            json={
                "calibrated_on": calibrated_on.isoformat(),
                "performed_by": "山东省计量科学研究院",
                "certificate_number": "LSsx2025-0001",
                "result": "pass",
                "as_found": "+0.02 %",
                "as_left": "+0.01 %",
                "uncertainty": "0.005 %",
                "notes": "送检",
            },
        )
        assert response.status_code == 201, response.get_json()
        calibration = response.get_json()
        expected_due = add_months(calibrated_on, 12)
        assert calibration["next_due_on"] == expected_due.isoformat()
        assert calibration["equipment_id"] == equipment["id"]
        assert calibration["recorded_by"] == "lab-chen"
        assert (
            response.headers["Location"]
            == f"{API}/equipment/{equipment['id']}/calibrations/{calibration['id']}"
        )
        assert read(client, lab, response.headers["Location"]) == calibration

        now = read(client, lab, f"{API}/equipment/{equipment['id']}")
        assert now["last_calibrated_on"] == calibrated_on.isoformat()
        assert now["due_on"] == expected_due.isoformat()
        assert now["state"] == "ok"
        assert now["version"] == equipment["version"] + 1

        [event] = outbox("equipment.calibrated")
        assert event["subject"] == equipment["id"]
        assert event["data"]["due_on"] == expected_due.isoformat()
        assert event["data"]["last_calibrated_on"] == calibrated_on.isoformat()
        assert event["data"]["state"] == "ok"
        assert event["data"]["version"] == now["version"]
        assert event["data"]["calibration"] == calibration
        assert event["data"]["standard_usable"] is True
        assert event["data"]["standard_blocking_reasons"] == []

        updated = outbox("standard.updated")[-1]
        assert updated["data"]["usable"] is True
        assert updated["data"]["blocking_reasons"] == []
        assert updated["data"]["equipment"][0]["due_on"] == expected_due.isoformat()
        assert read(client, lab, f"{API}/standards/{standard['id']}")["version"] == updated["data"]["version"]

    def test_no_standard_updated_when_usability_does_not_change(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrate(equipment["id"], today - dt.timedelta(days=200))
        before = len(outbox("standard.updated"))
        calibrate(equipment["id"], today - dt.timedelta(days=2))
        assert len(outbox("standard.updated")) == before
        assert outbox("equipment.calibrated")[-1]["data"]["standard_usable"] is True

    def test_valid_until_is_the_next_due_date(self, client, admin, standard, equip, calibrate, today):
        equipment = equip(standard["id"], calibration_interval_months=None)
        valid_until = today + dt.timedelta(days=90)
        calibration = calibrate(
            equipment["id"], today - dt.timedelta(days=3), valid_until=valid_until.isoformat()
        )
        assert calibration["next_due_on"] == valid_until.isoformat()
        assert read(client, admin, f"{API}/equipment/{equipment['id']}")["due_on"] == valid_until.isoformat()

    def test_without_interval_valid_until_is_required(
        self, client, admin, standard, equip, today, rows, outbox
    ):
        equipment = equip(standard["id"], calibration_interval_months=None)
        response = client.post(
            f"{API}/equipment/{equipment['id']}/calibrations",
            headers=admin,
            json={"calibrated_on": today.isoformat(), "result": "pass"},
        )
        body = assert_problem(response, 422, "valid_until")
        assert "interval" in body["errors"]["valid_until"][0]
        assert rows(Calibration) == 0
        assert outbox("equipment.calibrated") == []
        assert read(client, admin, f"{API}/equipment/{equipment['id']}")["due_on"] is None

    def test_an_overdue_calibration_blocks_the_standard(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrate(
            equipment["id"],
            today - dt.timedelta(days=30),
            valid_until=(today - dt.timedelta(days=1)).isoformat(),
        )
        event = outbox("equipment.calibrated")[-1]
        assert event["data"]["state"] == "overdue"
        assert event["data"]["standard_usable"] is False
        assert event["data"]["standard_blocking_reasons"] == [f"equipment_overdue:{equipment['id']}"]
        assert outbox("standard.updated")[-1]["data"]["blocking_reasons"] == [
            f"equipment_overdue:{equipment['id']}"
        ]

    def test_a_late_record_of_an_older_calibration_does_not_move_due_on_back(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        recent = today - dt.timedelta(days=10)
        calibrate(equipment["id"], recent)
        events_before = len(outbox("standard.updated"))
        older = calibrate(equipment["id"], today - dt.timedelta(days=400))
        assert older["next_due_on"] == add_months(today - dt.timedelta(days=400), 12).isoformat()

        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["last_calibrated_on"] == recent.isoformat()
        assert now["due_on"] == add_months(recent, 12).isoformat()
        assert now["state"] == "ok"
        assert outbox("equipment.calibrated")[-1]["data"]["due_on"] == add_months(recent, 12).isoformat()
        assert len(outbox("standard.updated")) == events_before
        listed = read(client, admin, f"{API}/equipment/{equipment['id']}/calibrations")
        assert [c["id"] for c in listed] == [older["id"], listed[1]["id"]]  # by calibration date

    def test_a_correction_of_the_latest_record_replaces_its_effect(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        earlier = today - dt.timedelta(days=300)
        calibrate(equipment["id"], earlier)
        wrong = calibrate(equipment["id"], today - dt.timedelta(days=5))
        assert read(client, admin, f"{API}/equipment/{equipment['id']}")["due_on"] == wrong["next_due_on"]

        limited_until = today + dt.timedelta(days=30)
        correction = calibrate(
            equipment["id"],
            today - dt.timedelta(days=6),
            corrects_id=wrong["id"],
            valid_until=limited_until.isoformat(),
            result="limited",
        )
        assert correction["corrects_id"] == wrong["id"]
        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["due_on"] == limited_until.isoformat()
        assert now["last_calibrated_on"] == (today - dt.timedelta(days=6)).isoformat()
        assert (
            len(read(client, admin, f"{API}/equipment/{equipment['id']}/calibrations")) == 3
        )  # history kept

    def test_a_correction_dated_earlier_falls_back_to_the_latest_remaining_record(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        middle = today - dt.timedelta(days=100)
        calibrate(equipment["id"], middle)
        wrong = calibrate(equipment["id"], today - dt.timedelta(days=1))
        calibrate(equipment["id"], today - dt.timedelta(days=200), corrects_id=wrong["id"])
        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["last_calibrated_on"] == middle.isoformat()
        assert now["due_on"] == add_months(middle, 12).isoformat()

    def test_a_correction_must_name_an_uncorrected_record_of_the_same_equipment(
        self, client, admin, standard, equip, calibrate, today, rows
    ):
        one = equip(standard["id"])
        other = equip(standard["id"], serial_number="SN-002")
        of_other = calibrate(other["id"], today - dt.timedelta(days=3))
        mine = calibrate(one["id"], today - dt.timedelta(days=3))
        calibrate(one["id"], today - dt.timedelta(days=3), corrects_id=mine["id"])
        count = rows(Calibration)
        for corrects_id in (of_other["id"], mine["id"], "no-such-record", "z" * 400):
            response = client.post(
                f"{API}/equipment/{one['id']}/calibrations",
                headers=admin,
                json={"calibrated_on": today.isoformat(), "result": "pass", "corrects_id": corrects_id},
            )
            assert_problem(response, 422, "corrects_id")
        assert rows(Calibration) == count
        assert_problem(
            client.get(f"{API}/equipment/{one['id']}/calibrations/{of_other['id']}", headers=admin), 404
        )

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"calibrated_on": "2999-01-01"}, "calibrated_on"),
            ({"calibrated_on": "tomorrow"}, "calibrated_on"),
            ({"calibrated_on": None}, "calibrated_on"),
            ({"result": "ok"}, "result"),
            ({"valid_until": "2000-01-01"}, "valid_until"),
            ({"next_due_on": "2030-01-01"}, "next_due_on"),
            ({"recorded_by": "me"}, "recorded_by"),
            ({"notes": "n" * 2001}, "notes"),
            ({"certificate_number": "C\u0000"}, "certificate_number"),
            ({"temperature": 20}, "temperature"),
        ],
    )
    def test_refuses_bad_records_and_writes_nothing(
        self, client, admin, standard, equip, today, rows, outbox, change, field
    ):
        equipment = equip(standard["id"])
        body = {"calibrated_on": (today - dt.timedelta(days=1)).isoformat(), "result": "pass", **change}
        response = client.post(f"{API}/equipment/{equipment['id']}/calibrations", json=body, headers=admin)
        assert_problem(response, 422, field)
        assert rows(Calibration) == 0
        assert outbox("equipment.calibrated") == []
        assert read(client, admin, f"{API}/equipment/{equipment['id']}") == equipment

    def test_tomorrow_is_in_the_future(self, client, admin, standard, equip, today, rows):
        equipment = equip(standard["id"])
        body = {"calibrated_on": (today + dt.timedelta(days=1)).isoformat(), "result": "pass"}
        response = client.post(f"{API}/equipment/{equipment['id']}/calibrations", json=body, headers=admin)
        assert_problem(response, 422, "calibrated_on")
        assert rows(Calibration) == 0

    def test_a_body_that_is_not_json_is_400(self, client, admin, standard, equip, rows):
        equipment = equip(standard["id"])
        response = client.post(
            f"{API}/equipment/{equipment['id']}/calibrations",
            data=b"\xff\xfe{",
            content_type="application/json",
            headers=admin,
        )
        assert_problem(response, 400)
        assert rows(Calibration) == 0

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 201), ("lab_staff", 201), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_record_and_read_calibrations(
        self, client, standard, equip, token_for, orgs, today, rows, role, status
    ):
        equipment = equip(standard["id"])
        headers = role_headers(token_for, orgs, role)
        response = client.post(
            f"{API}/equipment/{equipment['id']}/calibrations",
            headers=headers,
            json={"calibrated_on": today.isoformat(), "result": "pass"},
        )
        assert response.status_code == status
        assert rows(Calibration) == (1 if status == 201 else 0)
        listed = client.get(f"{API}/equipment/{equipment['id']}/calibrations", headers=headers)
        assert listed.status_code == (200 if status == 201 else status)


# --- failed and limited calibrations --------------------------------------------------------------


class TestFailedCalibrations:
    def test_a_failed_calibration_leaves_the_equipment_overdue_and_blocks_the_standard(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrate(equipment["id"], today - dt.timedelta(days=10))
        assert read(client, admin, f"{API}/standards/{standard['id']}")["usable"] is True

        failed_on = today - dt.timedelta(days=1)
        failed = calibrate(equipment["id"], failed_on, result="fail",
                           valid_until=(today + dt.timedelta(days=300)).isoformat())

        assert failed["next_due_on"] == failed_on.isoformat()  # valid_until does not apply to a failure
        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["last_calibrated_on"] == failed_on.isoformat()
        assert now["due_on"] == failed_on.isoformat()
        assert now["state"] == "overdue"
        reasons = [f"equipment_overdue:{equipment['id']}"]
        event = outbox("equipment.calibrated")[-1]
        assert event["data"]["calibration"]["result"] == "fail"
        assert event["data"]["state"] == "overdue"
        assert event["data"]["standard_usable"] is False
        assert event["data"]["standard_blocking_reasons"] == reasons
        assert outbox("standard.updated")[-1]["data"]["blocking_reasons"] == reasons
        standard_now = read(client, admin, f"{API}/standards/{standard['id']}")
        assert standard_now["usable"] is False and standard_now["blocking_reasons"] == reasons

    def test_a_calibration_failed_today_is_due_today_and_overdue_from_tomorrow(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        failed = calibrate(equipment["id"], today, result="fail")

        assert failed["next_due_on"] == today.isoformat()
        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert (now["due_on"], now["state"]) == (today.isoformat(), "due_soon")

    def test_a_failure_needs_neither_an_interval_nor_valid_until(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"], calibration_interval_months=None)
        failed_on = today - dt.timedelta(days=2)

        failed = calibrate(equipment["id"], failed_on, result="fail")

        assert failed["next_due_on"] == failed_on.isoformat()
        assert read(client, admin, f"{API}/equipment/{equipment['id']}")["state"] == "overdue"

    def test_a_new_interval_does_not_make_failed_equipment_valid(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        failed_on = today - dt.timedelta(days=5)
        calibrate(equipment["id"], failed_on, result="fail")
        before = read(client, admin, f"{API}/equipment/{equipment['id']}")

        response = client.patch(f"{API}/equipment/{equipment['id']}",
                                json={"calibration_interval_months": 24}, headers=admin)

        assert response.status_code == 200, response.get_json()
        assert response.get_json()["calibration_interval_months"] == 24
        assert response.get_json()["due_on"] == failed_on.isoformat()
        assert response.get_json()["state"] == "overdue"
        assert outbox("equipment.updated")[-1]["data"]["due_on"] == failed_on.isoformat()
        assert before["due_on"] == failed_on.isoformat()

    def test_a_passing_calibration_after_the_repair_makes_the_standard_usable_again(
        self, client, admin, standard, equip, calibrate, today, outbox
    ):
        equipment = equip(standard["id"])
        calibrate(equipment["id"], today - dt.timedelta(days=7), result="fail")
        assert read(client, admin, f"{API}/standards/{standard['id']}")["usable"] is False

        calibrate(equipment["id"], today - dt.timedelta(days=1))

        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["due_on"] == add_months(today - dt.timedelta(days=1), 12).isoformat()
        assert now["state"] == "ok"
        assert outbox("standard.updated")[-1]["data"]["usable"] is True

    def test_a_correction_of_a_mistaken_failure_restores_the_previous_calibration(
        self, client, admin, standard, equip, calibrate, today
    ):
        equipment = equip(standard["id"])
        passed_on = today - dt.timedelta(days=30)
        calibrate(equipment["id"], passed_on)
        mistaken = calibrate(equipment["id"], today - dt.timedelta(days=3), result="fail")

        calibrate(equipment["id"], passed_on, corrects_id=mistaken["id"])

        now = read(client, admin, f"{API}/equipment/{equipment['id']}")
        assert now["due_on"] == add_months(passed_on, 12).isoformat()
        assert now["state"] == "ok"

    def test_a_limited_calibration_counts_as_passed(self, client, admin, standard, equip, calibrate, today):
        equipment = equip(standard["id"])
        calibrated_on = today - dt.timedelta(days=3)

        limited = calibrate(equipment["id"], calibrated_on, result="limited", notes="限用: 0-40 MPa")

        assert limited["next_due_on"] == add_months(calibrated_on, 12).isoformat()
        assert read(client, admin, f"{API}/equipment/{equipment['id']}")["state"] == "ok"
        assert read(client, admin, f"{API}/standards/{standard['id']}")["usable"] is True
