"""Hostile input on every inventory endpoint: bodies that cannot be read, text no database can store,
fractional whole numbers, absurd pages and malformed ids are 4xx problems, never a 500, and write nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from services.inventory.models import (
    ApiClient,
    Calibration,
    Check,
    Equipment,
    Instrument,
    Organization,
    OutboxMessage,
    Standard,
    StatusChange,
    Verification,
)
from shared.timeutil import institute_today

API = "/api/v1"
PROBLEM = "application/problem+json"
MODELS = (ApiClient, Calibration, Check, Equipment, Instrument, Organization, OutboxMessage, Standard,
          StatusChange, Verification)


@pytest.fixture
def world(client, admin, orgs):
    """One of everything, made through the API; ids by kind."""
    today = institute_today().isoformat()

    def post(url: str, body: dict) -> dict:
        response = client.post(f"{API}{url}", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    standard = post("/standards", {"code": "ZB-T-001", "name": "温度标准装置", "discipline": "thermal",
                                   "measurand": "temperature"})
    equipment = post(f"/standards/{standard['id']}/equipment",
                     {"role": "main", "name": "铂电阻温度计", "calibration_interval_months": 12})
    calibration = post(f"/equipment/{equipment['id']}/calibrations",
                       {"calibrated_on": today, "result": "pass"})
    check = post(f"/standards/{standard['id']}/checks",
                 {"kind": "stability", "performed_on": today, "value": 0.01, "limit": 0.05})
    instrument = post("/instruments", {"organization_id": orgs["a"], "name": "压力表", "category": "压力表",
                                       "serial_number": "YB-1", "interval_months": 6})
    verification = post(f"/instruments/{instrument['id']}/verifications",
                        {"verified_on": today, "result": "pass"})
    client_id = post("/clients", {"name": "erp", "role": "lab_staff"})["client_id"]
    return {"standard": standard["id"], "equipment": equipment["id"], "calibration": calibration["id"],
            "check": check["id"], "instrument": instrument["id"], "verification": verification["id"],
            "organization": orgs["a"], "client": client_id, "today": today}


@pytest.fixture
def snapshot(inventory_db):
    """Row counts of every table and the versions of every versioned row: what a refused request leaves."""

    def take() -> dict:
        with inventory_db.Session() as session:
            counts = {model.__name__: session.scalar(select(func.count()).select_from(model))
                      for model in MODELS}
            versions = {(model.__name__, row.id): row.version
                        for model in (Organization, Standard, Equipment, Instrument)
                        for row in session.scalars(select(model))}
        return {"counts": counts, "versions": versions}

    return take


# Every endpoint taking a JSON body: (method, path with {kind} placeholders, a valid body, a text field).
JSON_ENDPOINTS = [
    ("POST", "/clients", {"name": "erp", "role": "lab_staff"}, "name"),
    ("POST", "/organizations", {"name": "示例大学", "kind": "university"}, "name"),
    ("PATCH", "/organizations/{organization}", {"address": "淄博市"}, "address"),
    ("POST", "/standards",
     {"code": "ZB-T-002", "name": "n", "discipline": "thermal", "measurand": "t"}, "code"),
    ("PATCH", "/standards/{standard}", {"name": "新名称"}, "name"),
    ("POST", "/standards/{standard}/status", {"status": "suspended", "reason": "送检"}, "reason"),
    ("POST", "/standards/{standard}/checks",
     {"kind": "stability", "performed_on": "{today}", "value": 0.01, "limit": 0.05}, "notes"),
    ("POST", "/standards/{standard}/equipment", {"role": "auxiliary", "name": "数字多用表"}, "name"),
    ("PATCH", "/equipment/{equipment}", {"model": "M-2"}, "model"),
    ("POST", "/equipment/{equipment}/calibrations", {"calibrated_on": "{today}", "result": "pass"},
     "certificate_number"),
    ("POST", "/instruments",
     {"organization_id": "{organization}", "name": "电子秤", "category": "秤", "serial_number": "C-1",
      "interval_months": 12}, "serial_number"),
    ("PATCH", "/instruments/{instrument}", {"location": "二车间"}, "location"),
    ("POST", "/instruments/{instrument}/verifications",
     {"verified_on": "{today}", "result": "pass"}, "notes"),
]
JSON_IDS = [f"{method} {path}" for method, path, _, _ in JSON_ENDPOINTS]
# One endpoint of each module, where a rule does not depend on the endpoint.
SOME_JSON = [JSON_ENDPOINTS[i] for i in (0, 2, 3, 8, 12)]
SOME_JSON_IDS = [JSON_IDS[i] for i in (0, 2, 3, 8, 12)]


def fill(template, world: dict):
    if isinstance(template, str):
        return template.format(**world)
    if isinstance(template, dict):
        return {key: fill(value, world) for key, value in template.items()}
    return template


def send(client, headers, method: str, path: str, world: dict, *, data=None, body=None,
         content_type: str = "application/json"):
    if body is not None:
        data = json.dumps(body)  # lone surrogates and NUL travel as JSON escapes ("\ud800", "\u0000")
    return client.open(f"{API}{fill(path, world)}", method=method, data=data, content_type=content_type,
                       headers=headers)


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    for field in fields:
        assert field in body.get("errors", {}), body
    return body


UNREADABLE = [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"name": ' + b"7" * 5000 + b"}", "number too long"),
    (b'{"name": "\xff\xfe"}', "Invalid JSON"),
    (b"\xef\xbb", "Invalid JSON"),
    (b'{"name": ', "Invalid JSON"),
]
UNREADABLE_IDS = ["deep-nesting", "huge-integer", "invalid-utf8", "truncated-bom", "truncated"]


class TestBodiesThatCannotBeRead:
    @pytest.mark.parametrize(("method", "path", "valid", "text_field"), JSON_ENDPOINTS, ids=JSON_IDS)
    def test_deep_nesting_is_400_and_writes_nothing(self, client, admin, world, snapshot, method, path, valid,
                                                    text_field):
        before = snapshot()
        body = assert_problem(send(client, admin, method, path, world, data=UNREADABLE[0][0]), 400)
        assert "nested too deeply" in body["detail"]
        assert snapshot() == before

    @pytest.mark.parametrize(("method", "path", "valid", "text_field"), SOME_JSON, ids=SOME_JSON_IDS)
    @pytest.mark.parametrize(("raw", "why"), UNREADABLE, ids=UNREADABLE_IDS)
    def test_is_400_and_writes_nothing(self, client, admin, world, snapshot, method, path, valid, text_field,
                                       raw, why):
        before = snapshot()
        body = assert_problem(send(client, admin, method, path, world, data=raw), 400)
        assert why in body["detail"]
        assert snapshot() == before

    @pytest.mark.parametrize(("method", "path", "valid", "text_field"),
                             [e for e in JSON_ENDPOINTS if e[0] == "POST"],
                             ids=[i for i in JSON_IDS if i.startswith("POST")])
    def test_an_empty_body_where_one_is_needed_is_400(self, client, admin, world, snapshot, method, path,
                                                      valid, text_field):
        before = snapshot()
        for content_type in ("application/json", ""):
            response = send(client, admin, method, path, world, data=b"", content_type=content_type)
            body = assert_problem(response, 400)
            assert "request body must be a JSON object" in body["detail"]
        assert snapshot() == before

    @pytest.mark.parametrize(("method", "path", "valid", "text_field"), SOME_JSON, ids=SOME_JSON_IDS)
    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    def test_a_body_sent_as_another_content_type_is_400(self, client, admin, world, snapshot, method, path,
                                                        valid, text_field, content_type):
        before = snapshot()
        data = json.dumps(fill(valid, world)).encode()
        response = send(client, admin, method, path, world, data=data, content_type=content_type)
        assert "request body must be a JSON object" in assert_problem(response, 400)["detail"]
        assert snapshot() == before

    @pytest.mark.parametrize("kind", ["organization", "standard", "equipment", "instrument"])
    def test_an_empty_patch_changes_nothing(self, client, admin, world, snapshot, outbox, kind):
        path = {"organization": "/organizations/{organization}", "standard": "/standards/{standard}",
                "equipment": "/equipment/{equipment}", "instrument": "/instruments/{instrument}"}[kind]
        before, events = snapshot(), len(outbox())
        response = send(client, admin, "PATCH", path, world, data=b"")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["id"] == world[kind]
        assert snapshot() == before and len(outbox()) == events


class TestTextNoDatabaseCanStore:
    @pytest.mark.parametrize(("method", "path", "valid", "text_field"), JSON_ENDPOINTS, ids=JSON_IDS)
    @pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "ok\udfff"],
                             ids=["nul", "high-surrogate", "low-surrogate"])
    def test_is_422_naming_the_field_and_writes_nothing(self, client, admin, world, snapshot, method, path,
                                                        valid, text_field, bad):
        before = snapshot()
        body = fill(valid, world) | {text_field: bad}
        response = send(client, admin, method, path, world, body=body)
        assert_problem(response, 422, text_field)
        assert snapshot() == before

    @pytest.mark.parametrize(("method", "path", "valid", "text_field"), SOME_JSON, ids=SOME_JSON_IDS)
    def test_an_unstorable_field_name_is_422_not_500(self, client, admin, world, snapshot, method, path,
                                                     valid, text_field):
        before = snapshot()
        body = fill(valid, world) | {"\ud800": 1, "x\x00": 2}
        response = send(client, admin, method, path, world, body=body)
        assert_problem(response, 422, "\ud800", "x\x00")
        assert snapshot() == before

    def test_nested_text_is_named_with_dots(self, client, admin, snapshot):
        before = snapshot()
        body = {"name": "示例大学", "kind": "university", "industry_chains": ["氢能", "生物\x00医药"],
                "contacts": [{"name": "王工", "email": "wang@example.com"},
                             {"name": "李\ud800", "email": "li@example.com"}]}
        response = send(client, admin, "POST", "/organizations", {}, body=body)
        assert_problem(response, 422, "industry_chains.1", "contacts.1.name")
        assert snapshot() == before

    def test_every_bad_field_is_named_at_once(self, client, admin, snapshot):
        body = {"name": "示例\x00大学", "kind": "company", "address": "\ud800"}
        response = send(client, admin, "POST", "/organizations", {}, body=body)
        assert_problem(response, 422, "name", "kind", "address")

    @pytest.mark.parametrize("path", ["/catalogue?q=a%00", "/organizations?q=%00", "/standards?q=x%00y",
                                      "/clients?organization_id=%00"])
    def test_a_nul_in_a_query_filter_is_422_naming_it(self, client, admin, path):
        field = path.split("?")[1].split("=")[0]
        assert_problem(client.get(f"{API}{path}", headers=admin), 422, field)

    def test_valid_chinese_text_round_trips(self, client, admin):
        body = {"name": "淄博示例研究院（测试）℃ 😀", "kind": "institute", "address": "山东省淄博市\n张店区"}
        response = send(client, admin, "POST", "/organizations", {}, body=body)
        assert response.status_code == 201, response.get_json()
        assert {k: response.get_json()[k] for k in body} == body


class TestWholeNumbers:
    @pytest.mark.parametrize(("method", "path", "field"), [
        ("POST", "/standards", "recovery_minutes"),
        ("PATCH", "/standards/{standard}", "recovery_minutes"),
        ("POST", "/standards/{standard}/equipment", "calibration_interval_months"),
        ("PATCH", "/equipment/{equipment}", "calibration_interval_months"),
        ("POST", "/instruments", "interval_months"),
        ("PATCH", "/instruments/{instrument}", "interval_months"),
    ])
    def test_a_number_that_is_not_a_whole_number_is_422(self, client, admin, world, snapshot, method, path,
                                                        field):
        valid = next(body for m, p, body, _ in JSON_ENDPOINTS if (m, p) == (method, path))
        before = snapshot()
        for value in (1.5, 12.0, "12", True, 1e400):
            response = send(client, admin, method, path, world, body=fill(valid, world) | {field: value})
            assert_problem(response, 422, field)
        assert snapshot() == before

    def test_a_whole_number_is_kept_as_given(self, client, admin, world):
        response = send(client, admin, "PATCH", "/standards/{standard}", world, body={"recovery_minutes": 45})
        assert response.status_code == 200
        assert response.get_json()["recovery_minutes"] == 45


# Every list endpoint, with a path that exists in `world`.
LISTS = ["/clients", "/organizations", "/catalogue", "/standards", "/standards/{standard}/history",
         "/standards/{standard}/checks", "/standards/{standard}/equipment",
         "/equipment/{equipment}/calibrations", "/instruments", "/instruments/{instrument}/verifications"]


class TestPages:
    @pytest.mark.parametrize("path", LISTS)
    def test_a_page_beyond_the_last_is_empty_whatever_its_number(self, client, admin, world, path):
        for page_size in (1, 500):
            url = f"{API}{fill(path, world)}?page_size={page_size}"
            next_after_last = client.get(f"{url}&page=1000", headers=admin)
            for page in (10**20, 2**63, 2**62 // page_size + 2, 10**6):
                response = client.get(f"{url}&page={page}", headers=admin)

                assert response.status_code == 200, response.get_json()
                assert response.get_json() == []
                metadata = json.loads(response.headers["X-Pagination"])
                assert metadata == json.loads(next_after_last.headers["X-Pagination"])
                assert "page" not in metadata

    @pytest.mark.parametrize("path", LISTS)
    def test_a_bad_page_is_422_naming_it(self, client, admin, world, path):
        for query, field in (("page=0", "page"), ("page=x", "page"), ("page_size=501", "page_size"),
                             ("page_size=0", "page_size")):
            assert_problem(client.get(f"{API}{fill(path, world)}?{query}", headers=admin), 422, field)


ITEMS = ["/clients/{id}", "/organizations/{id}", "/standards/{id}", "/equipment/{id}", "/instruments/{id}",
         "/standards/{standard}/checks/{id}", "/equipment/{equipment}/calibrations/{id}",
         "/instruments/{instrument}/verifications/{id}", "/standards/{id}/history", "/standards/{id}/checks",
         "/standards/{id}/equipment", "/equipment/{id}/calibrations", "/instruments/{id}/verifications"]


class TestMalformedIds:
    @pytest.mark.parametrize("path", ITEMS)
    def test_is_404(self, client, admin, world, path):
        for bad_id in ("x" * 5000, "a%00b", "%F0%9F%98%80", "%ED%A0%80", "1e400", "-1", "%20"):
            url = API + path.format(**{**world, "id": bad_id})
            body = assert_problem(client.get(url, headers=admin), 404)
            assert body["detail"].startswith("No such")

    @pytest.mark.parametrize(("method", "path", "body"), [
        ("PATCH", "/organizations/{id}", {"address": "x"}),
        ("PATCH", "/standards/{id}", {"name": "x"}),
        ("POST", "/standards/{id}/status", {"status": "suspended", "reason": "x"}),
        ("PATCH", "/equipment/{id}", {"name": "x"}),
        ("PATCH", "/instruments/{id}", {"name": "x"}),
        ("DELETE", "/instruments/{id}", None),
        ("DELETE", "/clients/{id}", None),
    ])
    def test_is_404_for_writes_too(self, client, admin, world, snapshot, method, path, body):
        before = snapshot()
        url = API + path.format(id="a%00" + "x" * 100)
        response = client.open(url, method=method, json=body, headers=admin)
        assert_problem(response, 404)
        assert snapshot() == before

    @pytest.mark.parametrize(("path", "valid", "own"), [
        ("/equipment/{equipment}/calibrations", {"calibrated_on": "{today}", "result": "pass"},
         "calibration"),
        ("/standards/{standard}/checks",
         {"kind": "stability", "performed_on": "{today}", "value": 0, "limit": 1}, "check"),
        ("/instruments/{instrument}/verifications", {"verified_on": "{today}", "result": "pass"},
         "verification"),
    ])
    def test_a_malformed_or_foreign_corrects_id_is_422(self, client, admin, world, snapshot, path, valid,
                                                       own):
        before = snapshot()
        records_of_other_kinds = [world[kind] for kind in ("calibration", "check", "verification")
                                  if kind != own]
        for bad in ("x" * 5000, "a\x00b", 42, ["x"], *records_of_other_kinds):
            body = fill(valid, world) | {"corrects_id": bad}
            assert_problem(send(client, admin, "POST", path, world, body=body), 422, "corrects_id")
        assert snapshot() == before


def test_the_token_endpoint_is_not_affected_by_the_json_rules(client, app):
    response = client.post(f"{API}/auth/token", data=b"", content_type="application/x-www-form-urlencoded")
    body = assert_problem(response, 400)
    assert body["code"] == "invalid_request"


def test_dates_in_the_future_are_named(client, admin, world):
    tomorrow = (dt.date.fromisoformat(world["today"]) + dt.timedelta(days=1)).isoformat()
    response = send(client, admin, "POST", "/instruments/{instrument}/verifications", world,
                    body={"verified_on": tomorrow, "result": "pass"})
    body = assert_problem(response, 422, "verified_on")
    assert "future" in body["errors"]["verified_on"][0]


# Boolean fields of JSON bodies: a JSON body has true and false; 0, 1, "yes" and "true" are type errors.
BOOLEAN_BODIES = [
    ("POST", "/organizations", {"name": "示例大学", "kind": "university"}, "alliance_member"),
    ("POST", "/standards", {"code": "ZB-T-003", "name": "n", "discipline": "thermal", "measurand": "t"}, "bookable"),
    ("PATCH", "/standards/{standard}", {}, "public"),
    ("POST", "/instruments",
     {"organization_id": "{organization}", "name": "电子秤", "category": "秤", "serial_number": "C-2",
      "interval_months": 12}, "mandatory"),
]


class TestJsonBooleans:
    @pytest.mark.parametrize("value", [0, 1, "yes", "true", None], ids=["0", "1", "yes", "true-string", "null"])
    @pytest.mark.parametrize(("method", "path", "body", "field"), BOOLEAN_BODIES,
                             ids=[f"{m} {p} {f}" for m, p, _, f in BOOLEAN_BODIES])
    def test_anything_but_true_or_false_is_refused_and_changes_nothing(
            self, client, admin, world, snapshot, method, path, body, field, value):
        before = snapshot()
        headers = dict(admin)
        if method == "PATCH":
            headers["If-Match"] = client.get(f"{API}{fill(path, world)}", headers=admin).headers["ETag"]
        response = send(client, headers, method, path, world, body={**fill(body, world), field: value})
        assert_problem(response, 422, field)
        assert snapshot() == before

    def test_true_and_false_are_taken(self, client, admin, world):
        for value in (False, True):
            body = {"code": f"ZB-B-{value}", "name": "n", "discipline": "thermal", "measurand": "t",
                    "bookable": value}
            response = client.post(f"{API}/standards", json=body, headers=admin)
            assert response.status_code == 201, response.get_json()
            assert response.get_json()["bookable"] is value
