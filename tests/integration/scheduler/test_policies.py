"""The notice policy over HTTP: defaults, full replacement by an admin, validation, If-Match, and its
effect on the next sweep."""

from __future__ import annotations

import copy
import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

from services.scheduler.models import Policy
from services.scheduler.schemas import DEFAULT_POLICY
from shared.timeutil import institute_today

from . import payloads

URL = "/api/v1/policies"


def a_policy(**changes) -> dict:
    return {**copy.deepcopy(DEFAULT_POLICY), **changes}


def saved_rows(db) -> int:
    with db.Session() as session:
        return session.scalar(select(func.count()).select_from(Policy))


@pytest.mark.parametrize("role", ["admin", "lab_staff", "enterprise", "partner"])
def test_every_client_reads_the_default_policy_until_one_is_saved(client, token_for, role):
    response = client.get(URL, headers=token_for(role, str(uuid.uuid4())))

    assert response.status_code == 200
    assert response.json == {**DEFAULT_POLICY, "version": 1}
    assert response.headers["ETag"] == '"1"'


def test_reading_the_policy_needs_a_token(client):
    assert client.get(URL).status_code == 401


def test_an_admin_replaces_the_policy_and_the_version_moves_on(client, admin, lab):
    policy = a_policy(instrument_lead_days=[0, 14, 45], overdue_repeat_days=3, overdue_max_notices=10,
                      booking_reminder_hours=48)

    response = client.put(URL, json=policy, headers=admin)

    assert response.status_code == 200
    expected = {**policy, "instrument_lead_days": [45, 14, 0], "version": 2}
    assert response.json == expected
    assert response.headers["ETag"] == '"2"'
    again = client.get(URL, headers=lab)
    assert (again.json, again.headers["ETag"]) == (expected, '"2"')
    assert client.put(URL, json=a_policy(), headers=admin).json["version"] == 3


@pytest.mark.parametrize("role", ["lab_staff", "enterprise", "partner"])
def test_only_an_admin_changes_the_policy(client, token_for, scheduler_db, role):
    headers = token_for(role, str(uuid.uuid4()))
    response = client.put(URL, json=a_policy(overdue_max_notices=1), headers=headers)

    assert response.status_code == 403
    assert saved_rows(scheduler_db) == 0


def test_changing_the_policy_needs_a_token(client, scheduler_db):
    assert client.put(URL, json=a_policy()).status_code == 401
    assert saved_rows(scheduler_db) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({k: v for k, v in DEFAULT_POLICY.items() if k != "equipment_lead_days"}, "equipment_lead_days"),
    (a_policy(instrument_lead_days=[30, 7, 7]), "instrument_lead_days"),
    (a_policy(certificate_lead_days=[]), "certificate_lead_days"),
    (a_policy(equipment_lead_days=[60, -1]), "equipment_lead_days.1"),
    (a_policy(equipment_lead_days=[3661]), "equipment_lead_days.0"),
    (a_policy(instrument_lead_days=["30"]), "instrument_lead_days.0"),
    (a_policy(instrument_lead_days=30), "instrument_lead_days"),
    (a_policy(instrument_lead_days=list(range(21))), "instrument_lead_days"),
    (a_policy(overdue_repeat_days=0), "overdue_repeat_days"),
    (a_policy(overdue_repeat_days=True), "overdue_repeat_days"),
    (a_policy(overdue_repeat_days=7.5), "overdue_repeat_days"),
    (a_policy(overdue_max_notices=10**30), "overdue_max_notices"),
    (a_policy(overdue_max_notices=None), "overdue_max_notices"),
    (a_policy(booking_reminder_hours=-1), "booking_reminder_hours"),
    (a_policy(reminder_sms=True), "reminder_sms"),
    (a_policy(version="2"), "version"),
])
def test_an_invalid_policy_is_refused_naming_the_field_and_nothing_changes(client, admin, scheduler_db, body,
                                                                             field):
    response = client.put(URL, json=body, headers=admin)

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.json["errors"]
    assert saved_rows(scheduler_db) == 0
    assert client.get(URL, headers=admin).json == {**DEFAULT_POLICY, "version": 1}


def test_a_body_that_is_not_json_is_a_400(client, admin):
    response = client.put(URL, data=b"{not json", headers={**admin, "Content-Type": "application/json"})

    assert response.status_code == 400


def test_if_match_protects_against_overwriting_a_newer_policy(client, admin, scheduler_db):
    first = client.put(URL, json=a_policy(overdue_max_notices=2), headers={**admin, "If-Match": '"1"'})
    assert first.status_code == 200

    stale = client.put(URL, json=a_policy(overdue_max_notices=9), headers={**admin, "If-Match": '"1"'})

    assert stale.status_code == 412
    assert client.get(URL, headers=admin).json["overdue_max_notices"] == 2
    current = client.put(URL, json=a_policy(overdue_max_notices=9), headers={**admin, "If-Match": '"2"'})
    assert current.status_code == 200


def test_the_version_read_can_be_sent_back_in_the_body(client, admin):
    current = client.get(URL, headers=admin).json

    assert client.put(URL, json={**current, "overdue_max_notices": 1}, headers=admin).status_code == 200
    stale = client.put(URL, json={**current, "overdue_max_notices": 5}, headers=admin)

    assert stale.status_code == 412
    assert client.get(URL, headers=admin).json["overdue_max_notices"] == 1


def test_the_next_sweep_uses_the_new_lead_times(client, admin, deliver, outbox):
    today = institute_today()
    organization = payloads.organization()
    deliver("organization.registered", organization)
    deliver("instrument.registered", payloads.instrument(
        organization_id=organization["id"], due_on=today + dt.timedelta(days=40), name="in 40 days"))
    assert client.post("/api/v1/sweeps", headers=admin).json["notices_emitted"] == 0

    assert client.put(URL, json=a_policy(instrument_lead_days=[45, 7, 0]), headers=admin).status_code == 200
    result = client.post("/api/v1/sweeps", headers=admin).json

    assert result["notices_emitted"] == 1
    [event] = outbox("recalibration.due_soon")
    items = event["data"]["items"]
    assert [(i["name"], i["lead"], i["days_left"]) for i in items] == [("in 40 days", "45", 40)]
