"""GET/PUT /organizations/{id}/preferences, and what they change in the notifications recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.notifier.models import KnownOrganization, Notification, Preferences
from tests.integration.notifier.test_delivery import notify
from tests.unit.notifier.samples import ENTERPRISE_ID, UNIVERSITY_ID

DEFAULTS = {"locale": "zh-CN", "email": True, "webhook": True, "muted_event_types": []}
UNKNOWN_ID = "5a0c2d9e-1111-4c1e-9a57-3f2d8e1b7a10"


def url(organization_id: str) -> str:
    return f"/api/v1/organizations/{organization_id}/preferences"


@pytest.fixture
def known(notifier_db):
    """The notifier has heard of the enterprise and the university (its read model)."""
    with notifier_db.transaction() as session:
        for organization_id, kind in ((ENTERPRISE_ID, "enterprise"), (UNIVERSITY_ID, "university")):
            session.add(KnownOrganization(id=organization_id, name="示例", name_en=None, kind=kind, contacts=[],
                                          source_version=1))


def stored(db, organization_id: str) -> Preferences | None:
    with db.Session() as session:
        return session.get(Preferences, organization_id)


class TestRead:
    def test_the_defaults_while_none_are_stored(self, client, admin, known):
        response = client.get(url(ENTERPRISE_ID), headers=admin)
        assert response.status_code == 200
        assert response.get_json() == {"organization_id": ENTERPRISE_ID, **DEFAULTS, "version": 0}
        assert response.headers["ETag"] == '"0"'

    @pytest.mark.parametrize("role", ["admin", "lab_staff"])
    def test_staff_read_any_organizations(self, client, token_for, known, role):
        assert client.get(url(UNIVERSITY_ID), headers=token_for(role)).status_code == 200

    @pytest.mark.parametrize(("role", "organization"), [("enterprise", ENTERPRISE_ID), ("partner", UNIVERSITY_ID)])
    def test_an_organization_reads_its_own_and_no_other(self, client, token_for, known, role, organization):
        headers = token_for(role, organization)
        assert client.get(url(organization), headers=headers).status_code == 200
        other = UNIVERSITY_ID if organization == ENTERPRISE_ID else ENTERPRISE_ID
        response = client.get(url(other), headers=headers)
        assert response.status_code == 404 and response.content_type == "application/problem+json"

    @pytest.mark.parametrize("organization_id", [UNKNOWN_ID, "not-an-id", "x" * 300])
    def test_an_organization_the_notifier_does_not_know_is_404(self, client, admin, known, organization_id):
        assert client.get(url(organization_id), headers=admin).status_code == 404
        assert client.put(url(organization_id), json=DEFAULTS, headers=admin).status_code == 404

    def test_a_token_is_needed(self, client, known):
        assert client.get(url(ENTERPRISE_ID)).status_code == 401
        assert client.put(url(ENTERPRISE_ID), json=DEFAULTS).status_code == 401


class TestWrite:
    def test_an_enterprise_sets_its_preferences(self, client, token_for, known, notifier_db):
        headers = token_for("enterprise", ENTERPRISE_ID)
        body = {"locale": "en", "email": False, "webhook": True,
                "muted_event_types": ["refstd.scheduler.booking.*", "refstd.scheduler.booking.*",
                                      "refstd.scheduler.recalibration.overdue"]}
        response = client.put(url(ENTERPRISE_ID), json=body, headers=headers)
        assert response.status_code == 200
        assert response.headers["ETag"] == '"1"'
        expected = {"organization_id": ENTERPRISE_ID, "locale": "en", "email": False, "webhook": True,
                    "muted_event_types": ["refstd.scheduler.booking.*", "refstd.scheduler.recalibration.overdue"],
                    "version": 1}
        assert response.get_json() == expected
        assert client.get(url(ENTERPRISE_ID), headers=headers).get_json() == expected
        assert stored(notifier_db, ENTERPRISE_ID).email is False

    def test_a_put_replaces_the_whole_document_and_bumps_the_version(self, client, admin, known):
        client.put(url(ENTERPRISE_ID), json={"locale": "en", "webhook": False}, headers=admin)
        response = client.put(url(ENTERPRISE_ID), json={"email": False}, headers=admin)
        assert response.get_json() == {"organization_id": ENTERPRISE_ID, **DEFAULTS, "email": False, "version": 2}

    def test_if_match(self, client, admin, known, notifier_db):
        assert client.put(url(ENTERPRISE_ID), json=DEFAULTS, headers={**admin, "If-Match": '"0"'}).status_code == 200
        response = client.put(url(ENTERPRISE_ID), json={**DEFAULTS, "locale": "en"},
                              headers={**admin, "If-Match": '"0"'})
        assert response.status_code == 412 and response.content_type == "application/problem+json"
        assert stored(notifier_db, ENTERPRISE_ID).locale == "zh-CN"
        ok = client.put(url(ENTERPRISE_ID), json={**DEFAULTS, "locale": "en"}, headers={**admin, "If-Match": '"1"'})
        assert ok.status_code == 200 and ok.headers["ETag"] == '"2"'

    def test_another_organizations_preferences_cannot_be_written(self, client, token_for, known, notifier_db):
        response = client.put(url(UNIVERSITY_ID), json={**DEFAULTS, "email": False},
                              headers=token_for("enterprise", ENTERPRISE_ID))
        assert response.status_code == 404
        assert stored(notifier_db, UNIVERSITY_ID) is None

    @pytest.mark.parametrize(("body", "field"), [
        ({"locale": "fr"}, "locale"),
        ({"email": "sometimes"}, "email"),
        ({"email": 0}, "email"),
        ({"webhook": "yes"}, "webhook"),
        ({"webhook": None}, "webhook"),
        ({"muted_event_types": "refstd.scheduler.booking.*"}, "muted_event_types"),
        ({"muted_event_types": ["booking.reminder"]}, "muted_event_types"),
        ({"muted_event_types": ["refstd.inventory.#"]}, "muted_event_types"),
        ({"muted_event_types": ["refstd..booking"]}, "muted_event_types"),
        ({"muted_event_types": [""]}, "muted_event_types.0"),
        ({"muted_event_types": ["refstd.scheduler.#"] * 101}, "muted_event_types"),
        ({"organization_id": UNIVERSITY_ID}, "organization_id"),
        ({"version": 7}, "version"),
        ({"colour": "blue"}, "colour"),
    ])
    def test_bad_values_are_422_naming_the_field_and_change_nothing(self, client, admin, known, notifier_db,
                                                                      body, field):
        response = client.put(url(ENTERPRISE_ID), json={**DEFAULTS, **body}, headers=admin)
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["errors"]
        assert stored(notifier_db, ENTERPRISE_ID) is None

    def test_a_body_that_is_not_json_is_400(self, client, admin, known):
        response = client.put(url(ENTERPRISE_ID), data="{", content_type="application/json", headers=admin)
        assert response.status_code == 400


class TestEffect:
    def count(self, db) -> int:
        with db.Session() as session:
            return session.scalar(select(func.count()).select_from(Notification))

    def test_muting_through_the_api_silences_the_next_notice(self, client, token_for, known, notifier_db, deliver):
        headers = token_for("enterprise", ENTERPRISE_ID)
        client.put(url(ENTERPRISE_ID), json={"muted_event_types": ["refstd.scheduler.recalibration.*"]},
                   headers=headers)
        notify(deliver, "recalibration.due_soon")
        assert self.count(notifier_db) == 0
        client.put(url(ENTERPRISE_ID), json={}, headers=headers)
        notify(deliver, "recalibration.due_soon")
        assert self.count(notifier_db) == 2

    def test_email_off_through_the_api_leaves_the_custodian_told(self, client, token_for, known, notifier_db,
                                                               deliver):
        client.put(url(UNIVERSITY_ID), json={"email": False}, headers=token_for("partner", UNIVERSITY_ID))
        notify(deliver, "booking.requested")
        with notifier_db.Session() as session:
            assert list(session.scalars(select(Notification.recipient))) == ["li.custodian@example.com"]
