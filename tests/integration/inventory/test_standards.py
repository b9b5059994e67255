"""Standards: registry, visibility by role, derived usability, status history and check records."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from services.inventory import domain
from services.inventory.models import Check, Standard, StatusChange
from shared.timeutil import add_years, institute_today

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


def standard_body(today: dt.date, **overrides) -> dict:
    body = {
        "code": "ZB-H2-001",
        "name": "气体流量标准装置",
        "name_en": "Gas flow standard",
        "discipline": "thermal",
        "measurand": "gas flow",
        "range": {"min": 0.1, "max": 100.0, "unit": "m^3/h"},
        "uncertainty": "U = 0.5 %, k = 2",
        "assessment_certificate": {
            "number": "[2024]鲁量标淄证字第001号",
            "issued_on": (today - dt.timedelta(days=365)).isoformat(),
        },
        "custodian": {"name": "李工", "email": "li@example.com"},
        "industries": ["hydrogen"],
    }
    body.update(overrides)
    return body


@pytest.fixture
def register(client, admin, today):
    def make(expect: int = 201, headers: dict | None = None, **overrides) -> dict:
        response = client.post(
            f"{API}/standards", json=standard_body(today, **overrides), headers=headers or admin
        )
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    return make


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
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


# --- registering ----------------------------------------------------------------------------------


class TestRegisteringAStandard:
    def test_answers_201_with_the_standard_its_location_and_etag(self, client, admin, today, outbox):
        body = standard_body(today, range={"min": -40, "max": 150, "unit": "℃"})
        response = client.post(f"{API}/standards", json=body, headers=admin)

        assert response.status_code == 201
        created = response.get_json()
        assert response.headers["Location"] == f"{API}/standards/{created['id']}"
        assert response.headers["ETag"] == f'"{created["version"]}"'
        assert created["code"] == "ZB-H2-001"
        assert created["name"] == "气体流量标准装置"
        assert created["range"] == {"min": -40.0, "max": 150.0, "unit": "℃"}  # stored as written
        issued = today - dt.timedelta(days=365)
        assert created["assessment_certificate"] == {
            "number": "[2024]鲁量标淄证字第001号",
            "issued_on": issued.isoformat(),
            "expires_on": add_years(issued, 4).isoformat(),
        }
        assert created["custodian"] == {"name": "李工", "email": "li@example.com"}
        assert created["status"] == "in_service"
        assert created["usable"] is True
        assert created["blocking_reasons"] == []
        assert created["equipment"] == []
        assert created["public"] is True and created["bookable"] is True
        assert client.get(response.headers["Location"], headers=admin).get_json() == created

    def test_publishes_standard_registered_with_the_state(self, register, outbox):
        created = register()
        [event] = outbox()
        assert event["type"] == "refstd.inventory.standard.registered"
        assert event["subject"] == created["id"]
        data = event["data"]
        assert data["id"] == created["id"]
        assert data["code"] == "ZB-H2-001"
        assert data["range"] == {"min": 0.1, "max": 100.0, "unit": "m^3/h"}
        assert data["assessment_certificate"]["expires_on"] == created["assessment_certificate"]["expires_on"]
        assert data["status"] == "in_service"
        assert data["usable"] is True
        assert data["blocking_reasons"] == []
        assert data["equipment"] == []
        assert data["version"] == created["version"]

    def test_keeps_a_given_expiry_and_has_no_history_when_status_is_defaulted(self, client, register, admin):
        created = register(assessment_certificate={"issued_on": "2023-03-01", "expires_on": "2026-12-31"})
        assert created["assessment_certificate"]["expires_on"] == "2026-12-31"
        history = client.get(f"{API}/standards/{created['id']}/history", headers=admin)
        assert history.status_code == 200
        assert history.get_json() == []

    def test_records_the_initial_status_when_it_is_given(self, client, token_for, today):
        lab = token_for("lab_staff", client_id="lab-zhang")
        response = client.post(f"{API}/standards", json=standard_body(today, status="sealed"), headers=lab)
        assert response.status_code == 201
        created = response.get_json()
        assert created["status"] == "sealed"
        assert created["usable"] is False
        assert created["blocking_reasons"] == ["status_sealed"]
        [change] = client.get(f"{API}/standards/{created['id']}/history", headers=lab).get_json()
        assert change["from_status"] is None
        assert change["to_status"] == "sealed"
        assert change["reason"] == "registered"
        assert change["changed_by"] == "lab-zhang"
        assert change["changed_at"].endswith("+00:00")

    def test_a_standard_without_certificate_is_not_usable(self, register):
        created = register(assessment_certificate=None)
        assert created["assessment_certificate"] is None
        assert created["usable"] is False
        assert created["blocking_reasons"] == ["assessment_certificate_missing"]

    def test_a_taken_code_is_409_duplicate(self, client, register, admin, today, rows, outbox):
        first = register()
        response = client.post(f"{API}/standards", json=standard_body(today, name="another"), headers=admin)
        body = assert_problem(response, 409)
        assert body["code"] == "duplicate"
        assert body["fields"] == ["code"]
        assert body["conflicts"] == [{"kind": "standard", "id": first["id"], "code": "ZB-H2-001"}]
        assert rows(Standard) == 1
        assert len(outbox()) == 1

    def test_a_code_taken_at_the_same_moment_is_409_duplicate(
        self, client, admin, today, rows, outbox, inventory_db, monkeypatch
    ):
        from services.inventory.api import standards as api

        real = api._duplicate_code
        calls = []

        def other_request_wins(session, code, exclude_id=None):
            # The first look finds nothing; then another request inserts the same code before ours.
            calls.append(code)
            if len(calls) == 1:
                with inventory_db.transaction() as other:
                    other.add(Standard(code=code, name="other", discipline="thermal", measurand="x"))
                return None
            return real(session, code, exclude_id)

        monkeypatch.setattr(api, "_duplicate_code", other_request_wins)
        response = client.post(f"{API}/standards", json=standard_body(today), headers=admin)
        body = assert_problem(response, 409)
        assert body["code"] == "duplicate" and body["fields"] == ["code"]
        assert len(calls) == 2
        assert rows(Standard) == 1
        assert outbox() == []

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"discipline": "astrology"}, "discipline"),
            ({"range": {"min": 1, "max": 2, "unit": "furlongs_per_fortnight_x"}}, "range.unit"),
            ({"range": {"min": 1, "max": 2, "unit": "5 kPa"}}, "range.unit"),
            ({"range": {"min": 1, "max": 2, "unit": ""}}, "range.unit"),
            ({"range": {"min": 1, "max": 2}}, "range.unit"),
            ({"range": {"min": 10, "max": 2, "unit": "kPa"}}, "range.max"),
            ({"range": {"min": 1, "max": 1e400, "unit": "kPa"}}, "range.max"),
            (
                {
                    "range": {
                        "min": 1,
                        "max": 2,
                        "unit": "kilogram * meter ** 2 / second ** 3 / ampere / kelvin / candela",
                    }
                },
                "range.unit",
            ),
            (
                {"assessment_certificate": {"issued_on": "2024-05-01", "expires_on": "2024-04-30"}},
                "assessment_certificate.expires_on",
            ),
            ({"assessment_certificate": {"issued_on": "9999-06-01"}}, "assessment_certificate.issued_on"),
            ({"assessment_certificate": {"issued_on": "2024-02-30"}}, "assessment_certificate.issued_on"),
            ({"custodian": {"name": "李工", "email": "not-an-address"}}, "custodian.email"),
            ({"status": "broken"}, "status"),
            ({"recovery_minutes": 10**30}, "recovery_minutes"),
            ({"recovery_minutes": -1}, "recovery_minutes"),
            ({"colour": "red"}, "colour"),
            ({"usable": True}, "usable"),
            ({"code": ""}, "code"),
            ({"code": None}, "code"),
            ({"name": 5}, "name"),
            ({"name": "bad\u0000name"}, "name"),
            ({"industries": ["ok", "nul\u0000"]}, "industries.1"),
            ({"public": "perhaps"}, "public"),
        ],
    )
    def test_refuses_a_bad_field_and_writes_nothing(self, client, admin, today, rows, outbox, change, field):
        response = client.post(f"{API}/standards", json=standard_body(today, **change), headers=admin)
        assert_problem(response, 422, field)
        assert rows(Standard) == 0
        assert rows(StatusChange) == 0
        assert outbox() == []

    def test_a_missing_required_field_is_named(self, client, admin, today, rows):
        body = standard_body(today)
        del body["code"], body["measurand"]
        assert_problem(client.post(f"{API}/standards", json=body, headers=admin), 422, "code", "measurand")
        assert rows(Standard) == 0

    @pytest.mark.parametrize(
        "raw",
        [
            '{"code": "X", "range": {"min": NaN, "max": 1, "unit": "kPa"}}',
            '{"code": "X", "range": {"min": -Infinity, "max": 1, "unit": "kPa"}}',
        ],
    )
    def test_refuses_nan_and_infinity(self, client, admin, rows, outbox, raw):
        response = client.post(f"{API}/standards", data=raw, content_type="application/json", headers=admin)
        assert_problem(response, 422, "range.min")
        assert rows(Standard) == 0 and outbox() == []

    def test_refuses_an_unpaired_surrogate(self, client, admin, today, rows):
        raw = json.dumps(standard_body(today), ensure_ascii=False).replace("气体流量标准装置", "\\ud800")
        response = client.post(f"{API}/standards", data=raw, content_type="application/json", headers=admin)
        assert_problem(response, 422, "name")
        assert rows(Standard) == 0

    @pytest.mark.parametrize("raw", [b"{not json", b'{"code": "\xff\xfe"}', b"\xef\xbb"])
    def test_a_body_that_is_not_json_is_400(self, client, admin, rows, outbox, raw):
        response = client.post(f"{API}/standards", data=raw, content_type="application/json", headers=admin)
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.mimetype == PROBLEM
        assert rows(Standard) == 0 and outbox() == []

    @pytest.mark.parametrize("raw", ["[]", '"a string"', "42"])
    def test_a_body_that_is_not_an_object_is_422(self, client, admin, rows, raw):
        response = client.post(f"{API}/standards", data=raw, content_type="application/json", headers=admin)
        assert_problem(response, 422)
        assert rows(Standard) == 0

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 201), ("lab_staff", 201), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_register(self, client, token_for, orgs, today, rows, outbox, role, status):
        response = client.post(
            f"{API}/standards", json=standard_body(today), headers=role_headers(token_for, orgs, role)
        )
        assert response.status_code == status
        assert rows(Standard) == (1 if status == 201 else 0)
        assert len(outbox()) == (1 if status == 201 else 0)


# --- reading --------------------------------------------------------------------------------------


class TestReadingStandards:
    @pytest.mark.parametrize("role", ["admin", "lab_staff", "partner", "enterprise", "none"])
    def test_private_standards_are_for_staff_only(self, client, register, token_for, orgs, role):
        public = register(code="PUB-1")
        private = register(code="PRIV-1", public=False)
        headers = role_headers(token_for, orgs, role)

        listed = client.get(f"{API}/standards", headers=headers)
        one_public = client.get(f"{API}/standards/{public['id']}", headers=headers)
        one_private = client.get(f"{API}/standards/{private['id']}", headers=headers)

        if role == "none":
            assert {listed.status_code, one_public.status_code, one_private.status_code} == {401}
            return
        assert one_public.status_code == 200
        codes = [s["code"] for s in listed.get_json()]
        if role in ("admin", "lab_staff"):
            assert codes == ["PRIV-1", "PUB-1"]
            assert one_private.status_code == 200
        else:
            assert codes == ["PUB-1"]
            assert_problem(one_private, 404)

    def test_answers_the_etag_of_the_version(self, client, register, admin):
        created = register()
        response = client.get(f"{API}/standards/{created['id']}", headers=admin)
        assert response.status_code == 200
        assert response.headers["ETag"] == f'"{created["version"]}"'

    @pytest.mark.parametrize(
        "standard_id", ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "x" * 500, "a%00b", "%E2%82%AC"]
    )
    def test_an_unknown_or_malformed_id_is_404(self, client, admin, standard_id):
        assert_problem(client.get(f"{API}/standards/{standard_id}", headers=admin), 404)
        assert_problem(client.patch(f"{API}/standards/{standard_id}", json={"name": "x"}, headers=admin), 404)

    def test_filters_by_discipline_status_and_text(self, client, register, admin):
        register(code="T-1", name="温度标准", name_en="Temperature", discipline="thermal")
        register(code="P-1", name="压力标准", name_en="Pressure 100%", discipline="mechanical")
        register(code="P-2", name="压力标准二", name_en=None, discipline="mechanical", status="sealed")

        def codes(query: str) -> list[str]:
            response = client.get(f"{API}/standards?{query}", headers=admin)
            assert response.status_code == 200, response.get_json()
            return [s["code"] for s in response.get_json()]

        assert codes("discipline=mechanical") == ["P-1", "P-2"]
        assert codes("status=sealed") == ["P-2"]
        assert codes("discipline=mechanical&status=in_service") == ["P-1"]
        assert codes("q=temperature") == ["T-1"]
        assert codes("q=压力") == ["P-1", "P-2"]
        assert codes("q=p-") == ["P-1", "P-2"]
        assert codes("q=100%25") == ["P-1"]  # "%" is a literal, not a wildcard
        assert codes("q=%25") == ["P-1"]
        assert codes("q=_") == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("discipline=astrology", "discipline"),
            ("status=gone", "status"),
            ("usable=maybe", "usable"),
            ("q=" + "x" * 101, "q"),
            ("q=a%00b", "q"),
            ("page=0", "page"),
            ("page_size=501", "page_size"),
        ],
    )
    def test_a_bad_filter_is_422(self, client, admin, query, field):
        assert_problem(client.get(f"{API}/standards?{query}", headers=admin), 422, field)

    def test_pages_are_counted_in_the_header(self, client, register, admin):
        for n in range(5):
            register(code=f"S-{n}")
        response = client.get(f"{API}/standards?page=2&page_size=2", headers=admin)
        assert [s["code"] for s in response.get_json()] == ["S-2", "S-3"]
        assert json.loads(response.headers["X-Pagination"])["total"] == 5
        far = client.get(f"{API}/standards?page={10**15}&page_size=500", headers=admin)
        assert far.status_code == 200
        assert far.get_json() == []


# --- usability --------------------------------------------------------------------------------------


@pytest.fixture
def equip(client, admin):
    def make(standard_id: str, **fields) -> dict:
        body = {"role": "main", "name": "质量流量计", "calibration_interval_months": 12, **fields}
        response = client.post(f"{API}/standards/{standard_id}/equipment", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


@pytest.fixture
def calibrate(client, admin):
    def make(equipment_id: str, calibrated_on: dt.date, **fields) -> dict:
        body = {"calibrated_on": calibrated_on.isoformat(), "result": "pass", **fields}
        response = client.post(f"{API}/equipment/{equipment_id}/calibrations", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


class TestUsability:
    def test_never_calibrated_equipment_blocks_until_its_first_calibration(
        self, client, register, equip, calibrate, admin, today
    ):
        standard = register()
        equipment = equip(standard["id"])
        read = client.get(f"{API}/standards/{standard['id']}", headers=admin).get_json()
        assert read["usable"] is False
        assert read["blocking_reasons"] == [f"equipment_never_calibrated:{equipment['id']}"]
        assert read["equipment"][0]["state"] == "never_calibrated"

        calibrate(equipment["id"], today - dt.timedelta(days=10))
        read = client.get(f"{API}/standards/{standard['id']}", headers=admin).get_json()
        assert read["usable"] is True
        assert read["blocking_reasons"] == []
        assert read["equipment"][0]["state"] == "ok"

    def test_overdue_equipment_blocks(self, client, register, equip, calibrate, admin, today):
        standard = register()
        equipment = equip(standard["id"])
        calibrate(equipment["id"], today - dt.timedelta(days=400))  # + 12 months is in the past
        read = client.get(f"{API}/standards/{standard['id']}", headers=admin).get_json()
        assert read["usable"] is False
        assert read["blocking_reasons"] == [f"equipment_overdue:{equipment['id']}"]
        assert read["equipment"][0]["state"] == "overdue"

    def test_equipment_due_today_does_not_block(self, client, register, equip, calibrate, admin, today):
        standard = register()
        equipment = equip(standard["id"], calibration_interval_months=None)
        calibrate(equipment["id"], today - dt.timedelta(days=30), valid_until=today.isoformat())
        read = client.get(f"{API}/standards/{standard['id']}", headers=admin).get_json()
        assert read["usable"] is True
        assert read["equipment"][0]["state"] == "due_soon"

    def test_an_expired_certificate_blocks(self, register, today):
        issued = today - dt.timedelta(days=5 * 366)
        standard = register(assessment_certificate={"issued_on": issued.isoformat()})
        assert standard["usable"] is False
        assert standard["blocking_reasons"] == ["assessment_certificate_expired"]

    def test_a_certificate_expiring_today_does_not_block(self, register, today):
        standard = register(
            assessment_certificate={
                "issued_on": (today - dt.timedelta(days=9)).isoformat(),
                "expires_on": today.isoformat(),
            }
        )
        assert standard["usable"] is True

    def test_a_suspended_standard_is_not_usable_and_every_reason_is_named(
        self, client, register, equip, admin, today
    ):
        issued = today - dt.timedelta(days=5 * 366)
        standard = register(assessment_certificate={"issued_on": issued.isoformat()})
        equipment = equip(standard["id"])
        response = client.post(
            f"{API}/standards/{standard['id']}/status",
            json={"status": "suspended", "reason": "漏气"},
            headers=admin,
        )
        assert response.status_code == 200
        assert response.get_json()["usable"] is False
        assert response.get_json()["blocking_reasons"] == [
            "status_suspended",
            "assessment_certificate_expired",
            f"equipment_never_calibrated:{equipment['id']}",
        ]

    def test_the_usable_filter_agrees_with_the_rule_and_pages(
        self, client, register, equip, calibrate, admin, today
    ):
        expired = {"issued_on": (today - dt.timedelta(days=5 * 366)).isoformat()}
        for n in range(3):
            register(code=f"OK-{n}")
        register(code="OK-3-EQUIPMENT")
        register(code="X-EXPIRED", assessment_certificate=expired)
        register(code="X-MISSING", assessment_certificate=None)
        register(code="X-SEALED", status="sealed")
        never = register(code="X-NEVER")
        overdue = register(code="X-OVERDUE")
        fine = client.get(f"{API}/standards?q=OK-3", headers=admin).get_json()[0]
        calibrate(equip(fine["id"])["id"], today - dt.timedelta(days=1))
        equip(never["id"])
        calibrate(equip(overdue["id"])["id"], today - dt.timedelta(days=500))

        def page(query: str) -> tuple[list[dict], dict]:
            response = client.get(f"{API}/standards?{query}", headers=admin)
            assert response.status_code == 200
            return response.get_json(), json.loads(response.headers["X-Pagination"])

        usable, meta = page("usable=true&page_size=3")
        assert [s["code"] for s in usable] == ["OK-0", "OK-1", "OK-2"]
        assert meta["total"] == 4 and meta["total_pages"] == 2
        usable2, _ = page("usable=true&page_size=3&page=2")
        assert [s["code"] for s in usable2] == ["OK-3-EQUIPMENT"]
        blocked, meta = page("usable=false&page_size=2&page=3")
        assert meta["total"] == 5
        assert [s["code"] for s in blocked] == ["X-SEALED"]
        everything, _ = page("page_size=500")
        # the SQL filter and the domain rule say the same of every standard
        assert {s["code"] for s in everything if s["usable"]} == {s["code"] for s in usable + usable2}
        all_blocked, _ = page("usable=false")
        assert all(not s["usable"] and s["blocking_reasons"] for s in all_blocked)
        assert len(all_blocked) + 4 == len(everything)

    def test_the_usable_filter_respects_visibility(self, client, register, token_for, orgs):
        register(code="PUB")
        register(code="PRIV", public=False)
        response = client.get(
            f"{API}/standards?usable=true", headers=token_for("partner", orgs["university"])
        )
        assert [s["code"] for s in response.get_json()] == ["PUB"]
        assert json.loads(response.headers["X-Pagination"])["total"] == 1


# --- changing ---------------------------------------------------------------------------------------


class TestPatchingAStandard:
    def test_changes_fields_replaces_nested_objects_and_publishes(self, client, register, admin, outbox):
        created = register()
        response = client.patch(
            f"{API}/standards/{created['id']}",
            headers=admin,
            json={
                "name": "氢气流量标准装置",
                "range": {"max": 50, "unit": "L/min"},
                "assessment_certificate": {"number": "N-2", "issued_on": "2025-01-31"},
                "custodian": None,
            },
        )
        assert response.status_code == 200, response.get_json()
        patched = response.get_json()
        assert patched["name"] == "氢气流量标准装置"
        assert patched["range"] == {"min": None, "max": 50.0, "unit": "L/min"}
        assert patched["assessment_certificate"] == {
            "number": "N-2",
            "issued_on": "2025-01-31",
            "expires_on": "2029-01-31",
        }
        assert patched["custodian"] is None
        assert patched["code"] == created["code"] and patched["public"] is True  # untouched
        assert patched["industries"] == ["hydrogen"] and patched["recovery_minutes"] == 0
        assert patched["version"] == created["version"] + 1
        assert response.headers["ETag"] == f'"{patched["version"]}"'
        event = outbox("standard.updated")[-1]
        assert event["data"]["name"] == "氢气流量标准装置"
        assert event["data"]["range"]["unit"] == "L/min"
        assert event["data"]["custodian"] is None
        assert event["data"]["version"] == patched["version"]
        assert event["data"]["usable"] is True

    def test_status_is_not_patchable(self, client, register, admin, outbox):
        created = register()
        response = client.patch(f"{API}/standards/{created['id']}", json={"status": "retired"}, headers=admin)
        body = assert_problem(response, 422, "status")
        assert "/status" in body["errors"]["status"][0]
        read = client.get(f"{API}/standards/{created['id']}", headers=admin).get_json()
        assert read["status"] == "in_service" and read["version"] == created["version"]
        assert len(outbox()) == 1

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"range": {"min": 1}}, "range.unit"),
            ({"range": {"min": 5, "max": 1, "unit": "kPa"}}, "range.max"),
            ({"range": {"unit": "parsecs_per_gram_x"}}, "range.unit"),
            ({"discipline": "cooking"}, "discipline"),
            ({"name": None}, "name"),
            ({"public": None}, "public"),
            ({"id": "new-id"}, "id"),
            ({"nonsense": 1}, "nonsense"),
            (
                {"assessment_certificate": {"issued_on": "2024-01-01", "expires_on": "2023-01-01"}},
                "assessment_certificate.expires_on",
            ),
        ],
    )
    def test_refuses_bad_changes(self, client, register, admin, outbox, change, field):
        created = register()
        response = client.patch(f"{API}/standards/{created['id']}", json=change, headers=admin)
        assert_problem(response, 422, field)
        assert client.get(f"{API}/standards/{created['id']}", headers=admin).get_json() == created
        assert len(outbox()) == 1

    def test_a_taken_code_is_409(self, client, register, admin):
        register(code="A")
        b = register(code="B")
        response = client.patch(f"{API}/standards/{b['id']}", json={"code": "A"}, headers=admin)
        assert assert_problem(response, 409)["code"] == "duplicate"
        same = client.patch(f"{API}/standards/{b['id']}", json={"code": "B"}, headers=admin)
        assert same.status_code == 200

    def test_honours_if_match(self, client, register, admin, outbox):
        created = register()
        url = f"{API}/standards/{created['id']}"
        stale = client.patch(url, json={"name": "x"}, headers={**admin, "If-Match": '"999"'})
        assert_problem(stale, 412)
        assert client.get(url, headers=admin).get_json()["name"] == created["name"]
        assert len(outbox()) == 1
        fresh = client.patch(
            url, json={"name": "y"}, headers={**admin, "If-Match": f'"{created["version"]}"'}
        )
        assert fresh.status_code == 200
        again = client.patch(
            url, json={"name": "z"}, headers={**admin, "If-Match": f'"{created["version"]}"'}
        )
        assert_problem(again, 412)

    def test_an_empty_change_changes_nothing(self, client, register, admin, outbox):
        created = register()
        response = client.patch(
            f"{API}/standards/{created['id']}", json={"name": created["name"]}, headers=admin
        )
        assert response.status_code == 200
        assert response.get_json()["version"] == created["version"]
        assert outbox("standard.updated") == []

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 200), ("lab_staff", 200), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_change_standards(self, client, register, token_for, orgs, role, status):
        created = register()
        response = client.patch(
            f"{API}/standards/{created['id']}",
            json={"name": "新"},
            headers=role_headers(token_for, orgs, role),
        )
        assert response.status_code == status


class TestChangingStatus:
    def test_suspends_with_a_reason_and_keeps_the_history(self, client, register, token_for, outbox):
        lab = token_for("lab_staff", client_id="lab-wang")
        created = register()
        response = client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "suspended", "reason": "主标准器送检"},
            headers=lab,
        )
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "suspended"
        assert body["usable"] is False
        assert body["blocking_reasons"] == ["status_suspended"]
        assert body["version"] == created["version"] + 1

        [event] = outbox("standard.status_changed")
        assert event["data"]["status"] == "suspended"
        assert event["data"]["usable"] is False
        assert event["data"]["blocking_reasons"] == ["status_suspended"]
        assert event["data"]["version"] == body["version"]
        change = event["data"]["change"]
        assert change["from_status"] == "in_service" and change["to_status"] == "suspended"
        assert change["reason"] == "主标准器送检" and change["changed_by"] == "lab-wang"
        assert change["standard_id"] == created["id"]

        client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "in_service", "reason": "送检合格"},
            headers=lab,
        )
        client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "retired", "reason": "报废"},
            headers=lab,
        )
        history = client.get(f"{API}/standards/{created['id']}/history", headers=lab).get_json()
        assert [(h["from_status"], h["to_status"], h["reason"]) for h in history] == [
            ("in_service", "suspended", "主标准器送检"),
            ("suspended", "in_service", "送检合格"),
            ("in_service", "retired", "报废"),
        ]
        assert history[0]["id"] == change["id"]
        assert history[0]["changed_at"] <= history[1]["changed_at"] <= history[2]["changed_at"]

    def test_the_current_status_is_409_no_change(self, client, register, admin, outbox):
        created = register()
        response = client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "in_service", "reason": "again"},
            headers=admin,
        )
        assert assert_problem(response, 409)["code"] == "no_change"
        assert outbox("standard.status_changed") == []

    def test_retired_is_final(self, client, register, admin, rows):
        created = register(status="retired")
        response = client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "in_service", "reason": "revive"},
            headers=admin,
        )
        assert assert_problem(response, 409)["code"] == "retired"
        assert rows(StatusChange) == 1

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"status": "suspended"}, "reason"),
            ({"status": "suspended", "reason": ""}, "reason"),
            ({"status": "suspended", "reason": "   "}, "reason"),
            ({"status": "paused", "reason": "x"}, "status"),
            ({"reason": "x"}, "status"),
            ({"status": "suspended", "reason": "x", "who": "me"}, "who"),
        ],
    )
    def test_refuses_a_bad_request(self, client, register, admin, rows, outbox, body, field):
        created = register()
        response = client.post(f"{API}/standards/{created['id']}/status", json=body, headers=admin)
        assert_problem(response, 422, field)
        assert rows(StatusChange) == 0 and len(outbox()) == 1

    def test_honours_if_match(self, client, register, admin):
        created = register()
        response = client.post(
            f"{API}/standards/{created['id']}/status",
            headers={**admin, "If-Match": '"7"'},
            json={"status": "sealed", "reason": "封存"},
        )
        assert_problem(response, 412)

    def test_an_unknown_standard_is_404(self, client, admin):
        response = client.post(
            f"{API}/standards/nope/status", json={"status": "sealed", "reason": "x"}, headers=admin
        )
        assert_problem(response, 404)
        assert_problem(client.get(f"{API}/standards/nope/history", headers=admin), 404)

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 200), ("lab_staff", 200), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_change_status_and_read_history(self, client, register, token_for, orgs, role, status):
        created = register()
        headers = role_headers(token_for, orgs, role)
        response = client.post(
            f"{API}/standards/{created['id']}/status",
            json={"status": "sealed", "reason": "封存"},
            headers=headers,
        )
        assert response.status_code == status
        assert client.get(f"{API}/standards/{created['id']}/history", headers=headers).status_code == status


# --- checks -----------------------------------------------------------------------------------------


class TestChecks:
    @pytest.mark.parametrize(
        ("kind", "value", "limit", "passed"),
        [
            ("stability", 0.5, 1.0, True),
            ("stability", -1.0, 1.0, False),
            ("stability", 1.2, 1.0, False),
            ("repeatability", 1.0, 1.0, True),
            ("repeatability", 1.01, 1.0, False),
        ],
    )
    def test_records_a_check_with_its_derived_result(
        self, client, register, token_for, today, outbox, kind, value, limit, passed
    ):
        lab = token_for("lab_staff", client_id="lab-li")
        standard = register()
        body = {"kind": kind, "performed_on": today.isoformat(), "value": value, "limit": limit, "unit": "%"}
        response = client.post(f"{API}/standards/{standard['id']}/checks", json=body, headers=lab)
        assert response.status_code == 201, response.get_json()
        check = response.get_json()
        assert check["passed"] is passed
        assert check["passed"] is domain.check_passed(kind, value, limit)
        assert check["standard_id"] == standard["id"]
        assert check["recorded_by"] == "lab-li"
        assert client.get(response.headers["Location"], headers=lab).get_json() == check
        [event] = outbox("standard.check_recorded")
        assert event["data"] == check

    def test_lists_checks_and_accepts_corrections(self, client, register, admin, today):
        standard = register()
        url = f"{API}/standards/{standard['id']}/checks"
        first = client.post(
            url,
            headers=admin,
            json={
                "kind": "stability",
                "performed_on": (today - dt.timedelta(days=300)).isoformat(),
                "value": 0.2,
                "limit": 0.1,
            },
        ).get_json()
        correction = client.post(
            url,
            headers=admin,
            json={
                "kind": "stability",
                "performed_on": (today - dt.timedelta(days=300)).isoformat(),
                "value": 0.02,
                "limit": 0.1,
                "corrects_id": first["id"],
                "notes": "transcription error",
            },
        )
        assert correction.status_code == 201
        assert correction.get_json()["corrects_id"] == first["id"]
        listed = client.get(url, headers=admin).get_json()
        assert [c["id"] for c in listed] == [first["id"], correction.get_json()["id"]]
        assert [c["passed"] for c in listed] == [False, True]
        again = client.post(
            url,
            headers=admin,
            json={
                "kind": "stability",
                "performed_on": today.isoformat(),
                "value": 0.01,
                "limit": 0.1,
                "corrects_id": first["id"],
            },
        )
        assert_problem(again, 422, "corrects_id")
        assert len(client.get(url, headers=admin).get_json()) == 2

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"unit": "bananas_x"}, "unit"),
            ({"kind": "accuracy"}, "kind"),
            ({"limit": 0}, "limit"),
            ({"limit": -1}, "limit"),
            ({"value": 1e400}, "value"),
            ({"value": "big"}, "value"),
            ({"performed_on": "2999-01-01"}, "performed_on"),
            ({"corrects_id": "nope"}, "corrects_id"),
            ({"passed": True}, "passed"),
            ({"notes": "a\u0000b"}, "notes"),
        ],
    )
    def test_refuses_bad_records_and_writes_nothing(
        self, client, register, admin, today, rows, outbox, change, field
    ):
        standard = register()
        body = {"kind": "stability", "performed_on": today.isoformat(), "value": 0.1, "limit": 1.0, **change}
        response = client.post(f"{API}/standards/{standard['id']}/checks", json=body, headers=admin)
        assert_problem(response, 422, field)
        assert rows(Check) == 0 and outbox("check_recorded") == []

    def test_a_correction_must_name_a_check_of_the_same_standard(self, client, register, admin, today, rows):
        a = register(code="A")
        b = register(code="B")
        body = {"kind": "stability", "performed_on": today.isoformat(), "value": 0.1, "limit": 1.0}
        of_a = client.post(f"{API}/standards/{a['id']}/checks", json=body, headers=admin).get_json()
        response = client.post(
            f"{API}/standards/{b['id']}/checks", json={**body, "corrects_id": of_a["id"]}, headers=admin
        )
        assert_problem(response, 422, "corrects_id")
        assert rows(Check) == 1
        assert_problem(client.get(f"{API}/standards/{b['id']}/checks/{of_a['id']}", headers=admin), 404)

    def test_nan_is_refused(self, client, register, admin, rows):
        standard = register()
        raw = '{"kind": "stability", "performed_on": "2024-01-01", "value": NaN, "limit": 1}'
        response = client.post(
            f"{API}/standards/{standard['id']}/checks",
            data=raw,
            content_type="application/json",
            headers=admin,
        )
        assert_problem(response, 422, "value")
        assert rows(Check) == 0

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 201), ("lab_staff", 201), ("partner", 403), ("enterprise", 403), ("none", 401)],
    )
    def test_only_staff_keep_check_records(self, client, register, token_for, orgs, today, role, status):
        standard = register()
        headers = role_headers(token_for, orgs, role)
        body = {"kind": "repeatability", "performed_on": today.isoformat(), "value": 0.1, "limit": 1.0}
        assert (
            client.post(f"{API}/standards/{standard['id']}/checks", json=body, headers=headers).status_code
            == status
        )
        assert client.get(f"{API}/standards/{standard['id']}/checks", headers=headers).status_code == (
            200 if status == 201 else status
        )
