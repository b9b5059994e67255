"""GET /due: what is due, most urgent first, with filters, states, paging and enterprise isolation."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid

import pytest

from services.scheduler.schemas import DEFAULT_POLICY
from shared.timeutil import institute_today

from . import payloads

URL = "/api/v1/due"


@pytest.fixture
def world(deliver):
    """Two enterprises' instruments and a standard with equipment, relative to today (institute time)."""
    today = institute_today()

    def on(offset: int) -> dt.date:
        return today + dt.timedelta(days=offset)

    org_a, org_b = payloads.organization(name="A 企业"), payloads.organization(name="B 企业")
    for org in (org_a, org_b):
        deliver("organization.registered", org)
    ids = {}
    for name, org, offset in [("a-overdue", org_a, -3), ("a-today", org_a, 0), ("a-10", org_a, 10),
                              ("a-45", org_a, 45), ("a-400", org_a, 400), ("b-5", org_b, 5)]:
        data = payloads.instrument(organization_id=org["id"], due_on=on(offset), name=name)
        deliver("instrument.registered", data)
        ids[name] = data["id"]
    removed = payloads.instrument(organization_id=org_a["id"], due_on=on(1), name="a-removed",
                                  status="removed")
    deliver("instrument.registered", removed)
    equipment = [{"id": str(uuid.uuid4()), "name": "e-never", "version": 1, "due_on": None},
                 {"id": str(uuid.uuid4()), "name": "e-50", "version": 1, "due_on": on(50).isoformat()}]
    standard = payloads.standard(certificate_expires_on=on(200), equipment=equipment, name="压力标准装置")
    deliver("standard.registered", standard)
    ids.update({"e-never": equipment[0]["id"], "e-50": equipment[1]["id"], "certificate": standard["id"]})
    return {"today": today, "on": on, "org_a": org_a["id"], "org_b": org_b["id"], "standard": standard["id"],
            "ids": ids}


def names(response) -> list[str]:
    assert response.status_code == 200, response.json
    return [item["name"] for item in response.json]


def test_lab_staff_see_what_is_due_within_30_days_most_urgent_first(client, lab, world):
    response = client.get(URL, headers=lab)

    assert names(response) == ["e-never", "a-overdue", "a-today", "b-5", "a-10"]
    by_name = {item["name"]: item for item in response.json}
    on = world["on"]
    assert by_name["e-never"] == {
        "item_kind": "equipment", "item_id": world["ids"]["e-never"], "name": "e-never",
        "serial_number": None, "standard_id": world["standard"], "organization_id": None, "due_on": None,
        "days_left": 0, "state": "due"}
    fields = ("item_kind", "organization_id", "due_on", "days_left", "state")
    assert {k: by_name["a-overdue"][k] for k in fields} == {
        "item_kind": "instrument", "organization_id": world["org_a"], "due_on": on(-3).isoformat(),
        "days_left": -3, "state": "overdue"}
    assert [(by_name[n]["days_left"], by_name[n]["state"]) for n in ("a-today", "b-5", "a-10")] == \
           [(0, "due"), (5, "due_soon"), (10, "due_soon")]
    assert json.loads(response.headers["X-Pagination"])["total"] == 5


def test_within_days_widens_the_view_and_states_follow_each_kinds_largest_lead(client, lab, world):
    wider = client.get(f"{URL}?within_days=60", headers=lab)
    assert names(wider) == ["e-never", "a-overdue", "a-today", "b-5", "a-10", "a-45", "e-50"]
    states = {item["name"]: item["state"] for item in wider.json}
    assert (states["a-45"], states["e-50"]) == ("ok", "due_soon")  # instruments: 30 days, equipment: 60

    everything = client.get(f"{URL}?within_days=3660", headers=lab)
    states = {item["name"]: item["state"] for item in everything.json}
    assert states["压力标准装置"] == "due_soon"  # certificate, 200 days: within its 270-day lead
    assert states["a-400"] == "ok"
    assert "a-removed" not in states

    assert names(client.get(f"{URL}?within_days=0", headers=lab)) == ["e-never", "a-overdue", "a-today"]


@pytest.mark.parametrize(("query", "expected"), [
    ("state=overdue", ["a-overdue"]),
    ("state=due", ["e-never", "a-today"]),
    ("state=due_soon", ["b-5", "a-10"]),
    ("state=due_soon&within_days=3660", ["b-5", "a-10", "e-50", "压力标准装置"]),
    ("state=ok&within_days=3660", ["a-45", "a-400"]),
    ("kind=equipment&within_days=3660", ["e-never", "e-50"]),
    ("kind=assessment_certificate&within_days=3660", ["压力标准装置"]),
    ("kind=instrument&state=due", ["a-today"]),
])
def test_filters_by_state_and_kind(client, lab, world, query, expected):
    assert names(client.get(f"{URL}?{query}", headers=lab)) == expected


def test_filters_by_organization_and_standard(client, admin, world):
    assert names(client.get(f"{URL}?organization_id={world['org_b']}", headers=admin)) == ["b-5"]
    assert names(client.get(f"{URL}?organization_id={world['org_a'].upper()}", headers=admin)) == \
           ["a-overdue", "a-today", "a-10"]
    assert names(client.get(f"{URL}?standard_id={world['standard']}&within_days=3660", headers=admin)) == \
           ["e-never", "e-50", "压力标准装置"]
    assert names(client.get(f"{URL}?organization_id=not-an-id", headers=admin)) == []


def test_an_enterprise_sees_only_its_own_instruments(client, token_for, world):
    headers = token_for("enterprise", world["org_a"])

    assert names(client.get(f"{URL}?within_days=3660", headers=headers)) == \
           ["a-overdue", "a-today", "a-10", "a-45", "a-400"]
    assert names(client.get(f"{URL}?organization_id={world['org_a']}", headers=headers)) == \
           ["a-overdue", "a-today", "a-10"]
    assert names(client.get(f"{URL}?organization_id={world['org_b']}", headers=headers)) == []
    assert names(client.get(f"{URL}?kind=equipment", headers=headers)) == []
    assert names(client.get(f"{URL}?standard_id={world['standard']}", headers=headers)) == []
    assert names(client.get(URL, headers=token_for("enterprise", None))) == []


def test_partners_may_not_see_what_is_due(client, token_for, world):
    assert client.get(URL, headers=token_for("partner", str(uuid.uuid4()))).status_code == 403


def test_what_is_due_needs_a_token(client):
    assert client.get(URL).status_code == 401


def test_pages_through_the_list(client, lab, world):
    first = client.get(f"{URL}?page_size=2", headers=lab)
    second = client.get(f"{URL}?page_size=2&page=2", headers=lab)

    assert names(first) == ["e-never", "a-overdue"]
    assert names(second) == ["a-today", "b-5"]
    assert json.loads(first.headers["X-Pagination"])["total_pages"] == 3
    assert names(client.get(f"{URL}?page=99999999", headers=lab)) == []


@pytest.mark.parametrize(("query", "field"), [
    ("within_days=-1", "within_days"), ("within_days=3661", "within_days"),
    ("within_days=soon", "within_days"),
    ("within_days=99999999999999999999", "within_days"), ("kind=telescope", "kind"), ("state=late", "state"),
    ("organization_id=" + "x" * 37, "organization_id"), ("page_size=501", "page_size"), ("page=0", "page"),
])
def test_a_bad_filter_is_named(client, lab, query, field):
    response = client.get(f"{URL}?{query}", headers=lab)

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.json["errors"]


def test_states_follow_the_policy_in_force(client, admin, world):
    policy = {**copy.deepcopy(DEFAULT_POLICY), "instrument_lead_days": [60, 7, 0]}
    assert client.put("/api/v1/policies", json=policy, headers=admin).status_code == 200

    states = {item["name"]: item["state"] for item in client.get(f"{URL}?within_days=60", headers=admin).json}

    assert states["a-45"] == "due_soon"
