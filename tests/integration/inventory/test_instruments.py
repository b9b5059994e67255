"""Enterprise instruments and their verifications: registration, due dates, lists, changes, removal, roles."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from services.inventory.api import instruments as instruments_api
from services.inventory.models import Instrument, Standard, Verification
from shared.timeutil import add_months, institute_today

BASE = "/api/v1/instruments"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def instrument_body(organization_id: str | None, **overrides) -> dict:
    body = {
        "name": "一般压力表",
        "category": "压力表",
        "serial_number": "YB-2024-001",
        "manufacturer": "上海仪表厂",
        "model": "Y-100",
        "regulation": "JJG 52-2013",
        "mandatory": True,
        "interval_months": 6,
        "location": "氢能车间 2 号线",
    }
    if organization_id is not None:
        body["organization_id"] = organization_id
    body.update(overrides)
    return body


@pytest.fixture
def register(client, admin):
    """``register(org_id, headers=admin, **fields)`` -> the response of POST /instruments."""

    def post(organization_id: str | None, headers: dict | None = None, **overrides):
        return client.post(BASE, json=instrument_body(organization_id, **overrides), headers=headers or admin)

    return post


@pytest.fixture
def count_rows(inventory_db):
    def count(model=Instrument) -> int:
        with inventory_db.Session() as session:
            return session.scalar(select(func.count()).select_from(model))

    return count


@pytest.fixture
def standard_id(inventory_db):
    with inventory_db.transaction() as session:
        standard = Standard(code="[2019]鲁社量标淄证字第001号", name="压力表标准装置",
                            discipline="mechanical", measurand="pressure")
        session.add(standard)
        session.flush()
        return standard.id


@pytest.fixture
def partner(token_for, orgs):
    return token_for("partner", orgs["university"])


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.json
    assert body["status"] == status
    for field in fields:
        assert field in body["errors"], body
    return body


def days_ago(days: int) -> dt.date:
    return institute_today() - dt.timedelta(days=days)


class TestRegisteringAnInstrument:
    def test_a_never_verified_instrument_is_due_on_its_registration_date(self, register, orgs, outbox):
        response = register(orgs["a"])
        assert response.status_code == 201
        body = response.json
        today = institute_today().isoformat()
        assert body["last_verified_on"] is None
        assert body["registered_on"] == today
        assert body["due_on"] == today
        assert body["status"] == "active"
        assert body["version"] == 1
        assert response.headers["ETag"] == '"1"'
        assert response.headers["Location"].endswith(f"{BASE}/{body['id']}")
        [event] = outbox("instrument.registered")
        assert event["type"] == "refstd.inventory.instrument.registered"
        assert event["subject"] == body["id"]
        assert event["data"]["due_on"] == today
        assert event["data"]["organization_id"] == orgs["a"]
        assert event["data"]["serial_number"] == "YB-2024-001"

    def test_a_verified_instrument_is_due_one_interval_after_its_last_verification(self, register, orgs):
        verified_on = days_ago(40)
        response = register(orgs["a"], last_verified_on=verified_on.isoformat(), interval_months=12)
        assert response.status_code == 201
        assert response.json["due_on"] == add_months(verified_on, 12).isoformat()

    def test_the_location_leads_to_the_instrument_with_its_etag(self, client, admin, register, orgs):
        created = register(orgs["a"])
        shown = client.get(created.headers["Location"], headers=admin)
        assert shown.status_code == 200
        assert shown.json == created.json
        assert shown.headers["ETag"] == '"1"'

    def test_chinese_text_round_trips_unchanged(self, client, admin, register, orgs):
        created = register(orgs["a"], name="可燃气体检测报警器", location="淄博市张店区 仓库")
        raw = client.get(created.headers["Location"], headers=admin).get_data(as_text=True)
        assert "可燃气体检测报警器" in raw
        assert "淄博市张店区 仓库" in raw

    def test_text_fields_are_trimmed_like_the_csv_import(self, register, orgs):
        response = register(orgs["a"], serial_number="  YB-9  ", manufacturer="   ")
        assert response.status_code == 201
        assert response.json["serial_number"] == "YB-9"
        assert response.json["manufacturer"] is None

    def test_a_second_instrument_with_the_same_serial_number_and_category_is_409(self, register, orgs, outbox,
                                                                               count_rows):
        first = register(orgs["a"]).json
        response = register(orgs["a"], name="another name")
        body = assert_problem(response, 409)
        assert body["code"] == "duplicate"
        assert body["existing_id"] == first["id"]
        assert body["conflicts"][0]["id"] == first["id"]
        assert count_rows() == 1
        assert len(outbox("instrument.registered")) == 1

    def test_a_registration_racing_another_one_is_409_naming_the_winner(self, register, orgs, outbox,
                                                                        monkeypatch):
        winner = register(orgs["a"]).json
        calls = []
        real = instruments_api._find_same

        def misses_the_first_time(*args):
            calls.append(args)
            return None if len(calls) == 1 else real(*args)

        # The check before the insert misses the concurrent winner; the unique constraint catches it.
        monkeypatch.setattr(instruments_api, "_find_same", misses_the_first_time)
        body = assert_problem(register(orgs["a"]), 409)
        assert body["code"] == "duplicate"
        assert body["existing_id"] == winner["id"]
        assert len(calls) == 2
        assert len(outbox("instrument.registered")) == 1

    def test_the_same_serial_number_in_another_category_or_organization_is_another_instrument(self, register,
                                                                                               orgs):
        assert register(orgs["a"]).status_code == 201
        assert register(orgs["a"], category="数字指示秤").status_code == 201
        assert register(orgs["b"]).status_code == 201

    def test_an_unknown_organization_is_422_and_nothing_is_written(self, register, orgs, outbox, count_rows):
        for bad in (UNKNOWN_ID, "not-an-id", "", "x\u0000y"):
            assert_problem(register(bad), 422, "organization_id")
        assert_problem(register(None), 422, "organization_id")
        assert count_rows() == 0
        assert outbox() == []

    @pytest.mark.parametrize("overrides, field", [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "压力表\u0000"}, "name"),
        ({"serial_number": "A\nB"}, "serial_number"),
        ({"interval_months": 0}, "interval_months"),
        ({"interval_months": 121}, "interval_months"),
        ({"interval_months": 10**30}, "interval_months"),
        ({"interval_months": "six"}, "interval_months"),
        ({"interval_months": True}, "interval_months"),
        ({"interval_months": 6.5}, "interval_months"),
        ({"mandatory": "maybe"}, "mandatory"),
        ({"last_verified_on": "2024-02-30"}, "last_verified_on"),
        ({"last_verified_on": "2999-01-01"}, "last_verified_on"),
        ({"due_on": "2030-01-01"}, "due_on"),
        ({"status": "removed"}, "status"),
        ({"colour": "red"}, "colour"),
    ])
    def test_a_bad_field_is_422_naming_it_and_nothing_is_written(self, register, orgs, outbox, count_rows,
                                                                 overrides, field):
        assert_problem(register(orgs["a"], **overrides), 422, field)
        assert count_rows() == 0
        assert outbox() == []

    def test_every_bad_field_is_named_at_once(self, client, admin, orgs):
        body = {"organization_id": orgs["a"], "name": "x\ty", "interval_months": -1}
        response = client.post(BASE, json=body, headers=admin)
        assert_problem(response, 422, "name", "category", "serial_number", "interval_months")

    def test_a_body_that_is_not_json_is_400(self, client, admin):
        response = client.post(BASE, data="{not json", content_type="application/json", headers=admin)
        assert_problem(response, 400)

    def test_lab_staff_registers_for_any_organization(self, register, lab, orgs):
        assert register(orgs["b"], headers=lab).status_code == 201

    def test_an_enterprise_registers_for_its_own_organization_by_default(self, register, token_for, orgs):
        response = register(None, headers=token_for("enterprise", orgs["a"]))
        assert response.status_code == 201
        assert response.json["organization_id"] == orgs["a"]

    def test_an_enterprise_naming_another_organization_gets_404(self, register, token_for, orgs, count_rows):
        enterprise = token_for("enterprise", orgs["a"])
        assert_problem(register(orgs["b"], headers=enterprise), 404)
        assert_problem(register(UNKNOWN_ID, headers=enterprise), 404)
        assert count_rows() == 0

    def test_a_partner_cannot_register_and_no_token_is_401(self, client, register, partner, orgs, count_rows):
        assert_problem(register(orgs["a"], headers=partner), 403)
        assert_problem(client.post(BASE, json=instrument_body(orgs["a"])), 401)
        assert count_rows() == 0


class TestListingInstruments:
    @pytest.fixture
    def fleet(self, register, orgs):
        """Org a: five instruments due at different dates, two of them mandatory; org b: one."""
        created = {}
        for index, (months_ago, mandatory) in enumerate([(1, True), (5, False), (7, True), (None, False),
                                                         (11, False)]):
            last = None if months_ago is None else add_months(institute_today(), -months_ago).isoformat()
            response = register(orgs["a"], serial_number=f"A-{index}", last_verified_on=last,
                                interval_months=6, mandatory=mandatory)
            assert response.status_code == 201
            created[f"A-{index}"] = response.json
        created["B-0"] = register(orgs["b"], serial_number="B-0").json
        return created

    def test_instruments_come_ordered_by_due_date_then_id(self, client, admin, fleet):
        response = client.get(BASE, headers=admin)
        assert response.status_code == 200
        due = [(item["due_on"], item["id"]) for item in response.json]
        assert due == sorted(due)
        assert len(due) == 6
        assert json.loads(response.headers["X-Pagination"])["total"] == 6

    def test_due_before_and_mandatory_filter_and_page(self, client, admin, orgs, fleet):
        limit = add_months(institute_today(), 1).isoformat()  # due within a month: A-1 A-2 A-3 A-4
        query = f"{BASE}?organization_id={orgs['a']}&due_before={limit}"
        first = client.get(f"{query}&page_size=3", headers=admin)
        second = client.get(f"{query}&page_size=3&page=2", headers=admin)
        assert json.loads(first.headers["X-Pagination"])["total"] == 4
        serials = [item["serial_number"] for item in first.json + second.json]
        assert sorted(serials) == ["A-1", "A-2", "A-3", "A-4"]
        assert len(first.json) == 3
        assert all(item["due_on"] <= limit for item in first.json + second.json)
        mandatory = client.get(f"{query}&mandatory=true", headers=admin).json
        assert [item["serial_number"] for item in mandatory] == ["A-2"]
        optional = client.get(f"{BASE}?organization_id={orgs['a']}&mandatory=false", headers=admin).json
        assert sorted(item["serial_number"] for item in optional) == ["A-1", "A-3", "A-4"]

    def test_due_before_includes_the_day_itself(self, client, admin, fleet):
        today = institute_today().isoformat()
        listed = client.get(f"{BASE}?due_before={today}", headers=admin).json
        assert {item["serial_number"] for item in listed} >= {"A-3", "B-0"}

    def test_an_enterprise_sees_only_its_own_instruments(self, client, token_for, orgs, fleet):
        enterprise = token_for("enterprise", orgs["b"])
        own = client.get(BASE, headers=enterprise).json
        assert [item["serial_number"] for item in own] == ["B-0"]
        other = client.get(f"{BASE}?organization_id={orgs['a']}", headers=enterprise)
        assert other.status_code == 200
        assert other.json == []

    def test_removed_instruments_are_listed_only_on_request(self, client, admin, fleet):
        client.delete(f"{BASE}/{fleet['A-0']['id']}", headers=admin)
        active = client.get(BASE, headers=admin).json
        assert fleet["A-0"]["id"] not in {item["id"] for item in active}
        removed = client.get(f"{BASE}?status=removed", headers=admin).json
        assert [item["id"] for item in removed] == [fleet["A-0"]["id"]]

    @pytest.mark.parametrize("query, field", [
        ("due_before=tomorrow", "due_before"),
        ("mandatory=perhaps", "mandatory"),
        ("status=gone", "status"),
        ("page_size=501", "page_size"),
        ("page=0", "page"),
    ])
    def test_a_bad_filter_is_422_naming_it(self, client, admin, query, field):
        assert_problem(client.get(f"{BASE}?{query}", headers=admin), 422, field)

    def test_odd_filter_values_give_an_empty_page_not_an_error(self, client, admin, fleet):
        for query in ("organization_id=nonsense", "organization_id=%00", "page=99999999999999999999"):
            response = client.get(f"{BASE}?{query}", headers=admin)
            assert response.status_code == 200, query
            assert response.json == []

    def test_a_partner_cannot_list_and_no_token_is_401(self, client, token_for, orgs):
        assert_problem(client.get(BASE, headers=token_for("partner", orgs["university"])), 403)
        assert_problem(client.get(BASE), 401)


class TestReadingAnInstrument:
    def test_another_organizations_instrument_is_404_for_an_enterprise(self, client, register, token_for,
                                                                       orgs):
        url = f"{BASE}/{register(orgs['a']).json['id']}"
        assert client.get(url, headers=token_for("enterprise", orgs["a"])).status_code == 200
        assert_problem(client.get(url, headers=token_for("enterprise", orgs["b"])), 404)

    def test_a_partner_gets_403_and_a_malformed_id_is_404(self, client, admin, register, partner, orgs):
        created = register(orgs["a"]).json
        assert_problem(client.get(f"{BASE}/{created['id']}", headers=partner), 403)
        for bad in ("nope", UNKNOWN_ID, "%00", "x" * 5000):
            assert_problem(client.get(f"{BASE}/{bad}", headers=admin), 404)


class TestChangingAnInstrument:
    def test_a_change_bumps_the_version_and_publishes_the_new_state(self, client, admin, register, orgs,
                                                                    outbox):
        created = register(orgs["a"]).json
        response = client.patch(f"{BASE}/{created['id']}", json={"name": "精密压力表", "location": None},
                                headers=admin)
        assert response.status_code == 200
        assert response.json["name"] == "精密压力表"
        assert response.json["location"] is None
        assert response.json["category"] == created["category"]
        assert response.json["version"] == 2
        assert response.headers["ETag"] == '"2"'
        [event] = outbox("instrument.updated")
        assert event["data"]["name"] == "精密压力表"
        assert event["data"]["version"] == 2

    def test_a_new_interval_moves_the_due_date_from_the_last_verification(self, client, admin, register,
                                                                          orgs):
        verified_on = days_ago(10)
        created = register(orgs["a"], last_verified_on=verified_on.isoformat(), interval_months=6).json
        response = client.patch(f"{BASE}/{created['id']}", json={"interval_months": 12}, headers=admin)
        assert response.json["due_on"] == add_months(verified_on, 12).isoformat()

    def test_a_never_verified_instrument_stays_due_on_its_registration_date(self, client, admin, register,
                                                                            orgs):
        created = register(orgs["a"]).json
        response = client.patch(f"{BASE}/{created['id']}", json={"interval_months": 12}, headers=admin)
        assert response.json["due_on"] == created["registered_on"]

    def test_a_new_interval_after_a_verification_counts_from_that_verification(self, client, admin, lab,
                                                                                register, orgs):
        created = register(orgs["a"], interval_months=6).json
        verified_on = days_ago(3)
        client.post(f"{BASE}/{created['id']}/verifications",
                    json={"verified_on": verified_on.isoformat(), "result": "pass"}, headers=lab)
        response = client.patch(f"{BASE}/{created['id']}", json={"interval_months": 3}, headers=admin)
        assert response.json["due_on"] == add_months(verified_on, 3).isoformat()

    def test_after_a_failed_verification_a_new_interval_leaves_it_due_at_once(self, client, admin, lab,
                                                                              register, orgs):
        created = register(orgs["a"], interval_months=6).json
        failed_on = days_ago(3)
        client.post(f"{BASE}/{created['id']}/verifications",
                    json={"verified_on": failed_on.isoformat(), "result": "fail"}, headers=lab)
        response = client.patch(f"{BASE}/{created['id']}", json={"interval_months": 12}, headers=admin)
        assert response.json["due_on"] == failed_on.isoformat()

    def test_a_change_that_changes_nothing_publishes_nothing(self, client, admin, register, orgs, outbox):
        created = register(orgs["a"]).json
        response = client.patch(f"{BASE}/{created['id']}", json={"name": created["name"]}, headers=admin)
        assert response.status_code == 200
        assert response.json["version"] == 1
        assert outbox("instrument.updated") == []

    def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(self, client, admin, register, orgs,
                                                                   outbox):
        created = register(orgs["a"]).json
        url = f"{BASE}/{created['id']}"
        assert client.patch(url, json={"name": "v2"}, headers={**admin, "If-Match": '"1"'}).status_code == 200
        assert_problem(client.patch(url, json={"name": "v3"}, headers={**admin, "If-Match": '"1"'}), 412)
        assert client.get(url, headers=admin).json["name"] == "v2"
        assert len(outbox("instrument.updated")) == 1

    def test_taking_another_instruments_serial_number_is_409(self, client, admin, register, orgs):
        register(orgs["a"], serial_number="S-1")
        second = register(orgs["a"], serial_number="S-2").json
        body = assert_problem(client.patch(f"{BASE}/{second['id']}", json={"serial_number": "S-1"},
                                           headers=admin), 409)
        assert body["code"] == "duplicate"

    @pytest.mark.parametrize("change, field", [
        ({"organization_id": UNKNOWN_ID}, "organization_id"),
        ({"last_verified_on": "2024-01-01"}, "last_verified_on"),
        ({"interval_months": 0}, "interval_months"),
        ({"name": None}, "name"),
        ({"category": "\u0000"}, "category"),
    ])
    def test_a_bad_change_is_422_naming_the_field(self, client, admin, register, orgs, outbox, change, field):
        created = register(orgs["a"]).json
        assert_problem(client.patch(f"{BASE}/{created['id']}", json=change, headers=admin), 422, field)
        assert client.get(f"{BASE}/{created['id']}", headers=admin).json["version"] == 1
        assert outbox("instrument.updated") == []

    def test_an_enterprise_changes_its_own_instruments_only(self, client, register, token_for, partner, orgs):
        created = register(orgs["a"]).json
        url = f"{BASE}/{created['id']}"
        owner, other = token_for("enterprise", orgs["a"]), token_for("enterprise", orgs["b"])
        assert client.patch(url, json={"location": "库房"}, headers=owner).status_code == 200
        assert_problem(client.patch(url, json={"location": "x"}, headers=other), 404)
        assert_problem(client.patch(url, json={"location": "x"}, headers=partner), 403)
        assert_problem(client.patch(url, json={"location": "x"}), 401)


class TestRemovingAnInstrument:
    def test_removal_keeps_the_instrument_marked_removed_and_publishes_it(self, client, admin, register, orgs,
                                                                          outbox, count_rows):
        created = register(orgs["a"]).json
        response = client.delete(f"{BASE}/{created['id']}", headers=admin)
        assert response.status_code == 200
        assert response.json["status"] == "removed"
        assert response.json["version"] == 2
        [event] = outbox("instrument.removed")
        assert event["data"]["status"] == "removed"
        assert event["subject"] == created["id"]
        assert count_rows() == 1
        assert client.get(f"{BASE}/{created['id']}", headers=admin).json["status"] == "removed"

    def test_removing_twice_changes_nothing_more(self, client, admin, register, orgs, outbox):
        created = register(orgs["a"]).json
        client.delete(f"{BASE}/{created['id']}", headers=admin)
        again = client.delete(f"{BASE}/{created['id']}", headers=admin)
        assert again.status_code == 200
        assert again.json["version"] == 2
        assert len(outbox("instrument.removed")) == 1

    def test_a_removed_instrument_cannot_be_changed_or_verified(self, client, admin, lab, register, orgs,
                                                                count_rows):
        created = register(orgs["a"]).json
        client.delete(f"{BASE}/{created['id']}", headers=admin)
        patched = assert_problem(client.patch(f"{BASE}/{created['id']}", json={"name": "x"}, headers=admin),
                                 409)
        assert patched["code"] == "removed"
        verified = assert_problem(client.post(f"{BASE}/{created['id']}/verifications",
                                              json={"verified_on": days_ago(1).isoformat(), "result": "pass"},
                                              headers=lab), 409)
        assert verified["code"] == "removed"
        assert count_rows(Verification) == 0

    def test_the_history_of_a_removed_instrument_stays_readable(self, client, admin, lab, register, orgs):
        created = register(orgs["a"]).json
        client.post(f"{BASE}/{created['id']}/verifications",
                    json={"verified_on": days_ago(1).isoformat(), "result": "pass"}, headers=lab)
        client.delete(f"{BASE}/{created['id']}", headers=admin)
        history = client.get(f"{BASE}/{created['id']}/verifications", headers=admin)
        assert history.status_code == 200
        assert len(history.json) == 1

    def test_a_stale_if_match_is_412(self, client, admin, register, orgs):
        created = register(orgs["a"]).json
        client.patch(f"{BASE}/{created['id']}", json={"name": "v2"}, headers=admin)
        assert_problem(client.delete(f"{BASE}/{created['id']}", headers={**admin, "If-Match": '"1"'}), 412)
        assert client.get(f"{BASE}/{created['id']}", headers=admin).json["status"] == "active"

    def test_only_the_owner_enterprise_and_the_institute_remove(self, client, register, token_for, partner,
                                                                orgs, outbox):
        created = register(orgs["a"]).json
        url = f"{BASE}/{created['id']}"
        assert_problem(client.delete(url, headers=token_for("enterprise", orgs["b"])), 404)
        assert_problem(client.delete(url, headers=partner), 403)
        assert_problem(client.delete(url), 401)
        assert outbox("instrument.removed") == []
        assert client.delete(url, headers=token_for("enterprise", orgs["a"])).status_code == 200


class TestVerifications:
    @pytest.fixture
    def instrument(self, register, orgs):
        return register(orgs["a"], interval_months=6).json

    @pytest.fixture
    def verify(self, client, lab):
        def post(instrument_id: str, headers: dict | None = None, **fields):
            return client.post(f"{BASE}/{instrument_id}/verifications", json=fields, headers=headers or lab)

        return post

    def test_a_passed_verification_moves_the_due_date_and_publishes_the_state(
            self, client, admin, verify, instrument, standard_id, outbox):
        verified_on = days_ago(2)
        response = verify(instrument["id"], verified_on=verified_on.isoformat(), result="pass",
                          certificate_number="JD-2024-0001", standard_id=standard_id, notes="示值误差合格")
        assert response.status_code == 201
        record = response.json
        next_due = add_months(verified_on, 6).isoformat()
        assert record["next_due_on"] == next_due
        assert record["recorded_by"] == "test-lab_staff"
        assert record["standard_id"] == standard_id
        assert client.get(response.headers["Location"], headers=admin).json == record
        current = client.get(f"{BASE}/{instrument['id']}", headers=admin).json
        assert current["last_verified_on"] == verified_on.isoformat()
        assert current["due_on"] == next_due
        [event] = outbox("instrument.verified")
        assert event["subject"] == instrument["id"]
        assert event["data"]["due_on"] == next_due
        assert event["data"]["last_verified_on"] == verified_on.isoformat()
        assert event["data"]["verification"]["id"] == record["id"]
        assert event["data"]["verification"]["result"] == "pass"

    def test_a_failed_verification_makes_the_instrument_due_at_once(self, client, admin, verify, instrument):
        verified_on = days_ago(1)
        record = verify(instrument["id"], verified_on=verified_on.isoformat(), result="fail").json
        assert record["next_due_on"] == verified_on.isoformat()
        current = client.get(f"{BASE}/{instrument['id']}", headers=admin).json
        assert current["due_on"] == verified_on.isoformat()

    def test_an_older_record_entered_late_does_not_move_the_due_date_back(self, client, admin, verify,
                                                                          instrument, outbox):
        recent, older = days_ago(5), days_ago(200)
        verify(instrument["id"], verified_on=recent.isoformat(), result="pass")
        late = verify(instrument["id"], verified_on=older.isoformat(), result="fail")
        assert late.status_code == 201
        current = client.get(f"{BASE}/{instrument['id']}", headers=admin).json
        assert current["last_verified_on"] == recent.isoformat()
        assert current["due_on"] == add_months(recent, 6).isoformat()
        assert len(outbox("instrument.verified")) == 2

    def test_a_correction_of_the_latest_record_replaces_its_effect(self, client, admin, verify, instrument):
        earlier, mistaken = days_ago(100), days_ago(3)
        verify(instrument["id"], verified_on=earlier.isoformat(), result="pass")
        wrong = verify(instrument["id"], verified_on=mistaken.isoformat(), result="pass").json
        corrected_on = days_ago(30)
        correction = verify(instrument["id"], verified_on=corrected_on.isoformat(), result="fail",
                            corrects_id=wrong["id"], notes="记录日期有误")
        assert correction.status_code == 201
        assert correction.json["corrects_id"] == wrong["id"]
        current = client.get(f"{BASE}/{instrument['id']}", headers=admin).json
        assert current["last_verified_on"] == corrected_on.isoformat()
        assert current["due_on"] == corrected_on.isoformat()  # the corrected result is a fail
        history = client.get(f"{BASE}/{instrument['id']}/verifications", headers=admin).json
        assert [item["id"] for item in history][-1] == wrong["id"]  # still there: records are history
        assert len(history) == 3

    def test_a_correction_moving_the_latest_date_back_lets_the_next_latest_rule(self, client, admin, verify,
                                                                                 instrument):
        kept, mistaken = days_ago(20), days_ago(3)
        verify(instrument["id"], verified_on=kept.isoformat(), result="pass")
        wrong = verify(instrument["id"], verified_on=mistaken.isoformat(), result="pass").json
        verify(instrument["id"], verified_on=days_ago(60).isoformat(), result="pass", corrects_id=wrong["id"])
        current = client.get(f"{BASE}/{instrument['id']}", headers=admin).json
        assert current["last_verified_on"] == kept.isoformat()
        assert current["due_on"] == add_months(kept, 6).isoformat()

    def test_a_correction_must_name_an_uncorrected_record_of_the_same_instrument(self, register, verify,
                                                                                instrument, orgs, count_rows):
        other = register(orgs["a"], serial_number="OTHER").json
        foreign = verify(other["id"], verified_on=days_ago(1).isoformat(), result="pass").json
        own = verify(instrument["id"], verified_on=days_ago(2).isoformat(), result="pass").json
        verify(instrument["id"], verified_on=days_ago(1).isoformat(), result="pass", corrects_id=own["id"])
        before = count_rows(Verification)
        for bad in (foreign["id"], UNKNOWN_ID, "nonsense", own["id"]):
            assert_problem(verify(instrument["id"], verified_on=days_ago(1).isoformat(), result="pass",
                                  corrects_id=bad), 422, "corrects_id")
        assert count_rows(Verification) == before

    @pytest.mark.parametrize("fields, bad", [
        ({"verified_on": "2999-01-01", "result": "pass"}, "verified_on"),
        ({"verified_on": "yesterday", "result": "pass"}, "verified_on"),
        ({"result": "pass"}, "verified_on"),
        ({"verified_on": "2024-01-02", "result": "limited"}, "result"),
        ({"verified_on": "2024-01-02", "result": "pass", "standard_id": UNKNOWN_ID}, "standard_id"),
        ({"verified_on": "2024-01-02", "result": "pass", "standard_id": "\u0000"}, "standard_id"),
        ({"verified_on": "2024-01-02", "result": "pass", "certificate_number": "A\u0000"},
         "certificate_number"),
        ({"verified_on": "2024-01-02", "result": "pass", "next_due_on": "2030-01-01"}, "next_due_on"),
    ])
    def test_a_bad_record_is_422_naming_the_field_and_nothing_is_written(self, verify, instrument, outbox,
                                                                        count_rows, fields, bad):
        assert_problem(verify(instrument["id"], **fields), 422, bad)
        assert count_rows(Verification) == 0
        assert outbox("instrument.verified") == []

    def test_notes_may_span_lines(self, verify, instrument):
        response = verify(instrument["id"], verified_on=days_ago(1).isoformat(), result="pass",
                          notes="第一行\n第二行\t完")
        assert response.status_code == 201

    def test_only_the_institute_records_and_an_enterprise_reads_its_own(self, client, verify, instrument,
                                                                        token_for, partner, orgs, admin,
                                                                        count_rows):
        body = {"verified_on": days_ago(1).isoformat(), "result": "pass"}
        own = token_for("enterprise", orgs["a"])
        assert_problem(verify(instrument["id"], headers=own, **body), 403)
        assert_problem(verify(instrument["id"], headers=partner, **body), 403)
        assert_problem(client.post(f"{BASE}/{instrument['id']}/verifications", json=body), 401)
        assert verify(instrument["id"], headers=admin, **body).status_code == 201
        assert count_rows(Verification) == 1
        url = f"{BASE}/{instrument['id']}/verifications"
        assert len(client.get(url, headers=own).json) == 1
        assert_problem(client.get(url, headers=token_for("enterprise", orgs["b"])), 404)
        assert_problem(client.get(url, headers=partner), 403)

    def test_an_unknown_instrument_is_404(self, verify, client, admin):
        assert_problem(verify(UNKNOWN_ID, verified_on="2024-01-02", result="pass"), 404)
        assert_problem(client.get(f"{BASE}/nonsense/verifications", headers=admin), 404)

    def test_records_are_listed_oldest_first_and_paged(self, client, admin, verify, instrument):
        for days in (3, 30, 10):
            verify(instrument["id"], verified_on=days_ago(days).isoformat(), result="pass")
        url = f"{BASE}/{instrument['id']}/verifications"
        first = client.get(f"{url}?page_size=2", headers=admin)
        second = client.get(f"{url}?page_size=2&page=2", headers=admin)
        dates = [item["verified_on"] for item in first.json + second.json]
        assert dates == [days_ago(d).isoformat() for d in (30, 10, 3)]
        assert json.loads(first.headers["X-Pagination"])["total"] == 3


def test_the_spec_documents_the_endpoints_and_the_delete_answer(client):
    spec = client.get("/openapi.json").json
    paths = spec["paths"]
    one = f"{BASE}/{{instrument_id}}"
    for path in (BASE, one, f"{BASE}/import", f"{one}/verifications",
                 f"{one}/verifications/{{verification_id}}"):
        assert path in paths, path
    assert "200" in paths[f"{BASE}/{{instrument_id}}"]["delete"]["responses"]
    assert "removed" in paths[f"{BASE}/{{instrument_id}}"]["delete"]["description"]
