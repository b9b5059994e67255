"""Webhook endpoints over HTTP: registration with its one-time secret, the SSRF guard, roles, deletion
and pings that enter the delivery log."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services.notifier.models import Notification, WebhookEndpoint
from services.notifier.webhooks import PING_EVENT_TYPE

PARTNER_ORG = "7c3e9a12-5b4d-4f8e-a1c6-9d2e4b6f8a01"
OTHER_ORG = "0b9d1c4e-2f6a-4c1e-9a57-3f2d8e1b7a10"
# A public address written as a literal: registration checks it without DNS and never connects to it.
PUBLIC_URL = "https://93.184.216.34/hooks/refstd"
BOOKINGS = ["refstd.scheduler.booking.*"]


@pytest.fixture(autouse=True)
def private_addresses_refused(monkeypatch):
    monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE", raising=False)


@pytest.fixture
def partner(token_for):
    return token_for("partner", PARTNER_ORG, client_id="cl_partner")


@pytest.fixture
def other_partner(token_for):
    return token_for("partner", OTHER_ORG, client_id="cl_other")


@pytest.fixture
def register(client):
    def post(headers, **body):
        body.setdefault("url", PUBLIC_URL)
        body.setdefault("event_types", BOOKINGS)
        return client.post("/api/v1/webhooks", json=body, headers=headers)

    return post


@pytest.fixture
def endpoints(notifier_db):
    def read() -> list[WebhookEndpoint]:
        with notifier_db.Session() as session:
            return session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)).all()

    return read


@pytest.fixture
def notifications(notifier_db):
    def read() -> list[Notification]:
        with notifier_db.Session() as session:
            return session.scalars(select(Notification)).all()

    return read


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    for field in fields:
        assert field in body["errors"], body
    return body


class TestRegistering:
    def test_a_partner_registers_an_endpoint_for_its_organization_and_gets_the_secret_once(
            self, client, register, partner, endpoints):
        response = register(partner)

        assert response.status_code == 201, response.get_data(as_text=True)
        body = response.get_json()
        assert body["secret"].startswith("whsec_")
        assert body["organization_id"] == PARTNER_ORG
        assert body["url"] == PUBLIC_URL
        assert body["event_types"] == BOOKINGS
        assert body["active"] is True
        assert body["created_by"] == "cl_partner"
        assert response.headers["Location"].endswith(f"/api/v1/webhooks/{body['id']}")
        assert response.headers["Cache-Control"] == "no-store"
        [stored] = endpoints()
        assert stored.secret == body["secret"]  # kept to sign deliveries (HMAC)

        shown = client.get(response.headers["Location"], headers=partner)
        assert shown.status_code == 200
        assert "secret" not in shown.get_json()
        assert shown.get_json()["id"] == body["id"]
        listed = client.get("/api/v1/webhooks", headers=partner).get_json()
        assert [w["id"] for w in listed] == [body["id"]]
        assert "secret" not in listed[0]

    def test_each_endpoint_gets_its_own_secret(self, register, partner):
        assert register(partner).get_json()["secret"] != register(partner).get_json()["secret"]

    def test_a_partner_may_name_its_own_organization(self, register, partner):
        response = register(partner, organization_id=PARTNER_ORG)
        assert response.status_code == 201
        assert response.get_json()["organization_id"] == PARTNER_ORG

    def test_a_partner_naming_another_organization_gets_404_and_nothing_is_written(
            self, register, partner, endpoints):
        assert_problem(register(partner, organization_id=OTHER_ORG), 404)
        assert endpoints() == []

    def test_a_partner_client_without_an_organization_is_forbidden(self, register, token_for, endpoints):
        assert_problem(register(token_for("partner", None)), 403)
        assert endpoints() == []

    def test_an_admin_registers_an_endpoint_for_every_organization_by_default(self, register, admin):
        response = register(admin, event_types=["refstd.#"])
        assert response.status_code == 201
        assert response.get_json()["organization_id"] is None

    def test_an_admin_registers_an_endpoint_for_any_organization(self, register, admin):
        response = register(admin, organization_id=OTHER_ORG)
        assert response.status_code == 201
        assert response.get_json()["organization_id"] == OTHER_ORG

    def test_an_organization_id_that_is_not_an_id_is_a_422_naming_it(self, register, admin, endpoints):
        assert_problem(register(admin, organization_id="acme"), 422, "organization_id")
        assert endpoints() == []

    @pytest.mark.parametrize("role", ["enterprise", "lab_staff"])
    def test_other_roles_may_not_register_webhooks(self, register, token_for, role, endpoints):
        assert_problem(register(token_for(role, PARTNER_ORG if role == "enterprise" else None)), 403)
        assert endpoints() == []

    def test_without_a_token_it_is_401(self, client):
        response = client.post("/api/v1/webhooks", json={"url": PUBLIC_URL, "event_types": BOOKINGS})
        assert_problem(response, 401)

    def test_repeated_patterns_are_stored_once(self, register, partner):
        response = register(partner, event_types=BOOKINGS + ["refstd.scheduler.recalibration.*"] + BOOKINGS)
        assert response.get_json()["event_types"] == BOOKINGS + ["refstd.scheduler.recalibration.*"]


class TestRefusedUrls:
    @pytest.mark.parametrize("url, kind", [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.8/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ])
    def test_a_url_on_a_private_address_is_a_422_naming_url_with_the_reason(
            self, register, partner, endpoints, url, kind):
        body = assert_problem(register(partner, url=url), 422, "url")
        assert kind in body["errors"]["url"][0]
        assert "SSRF" in body["errors"]["url"][0]
        assert endpoints() == []

    @pytest.mark.parametrize("url", ["https://user:secret@93.184.216.34/hook", "ftp://93.184.216.34/hook",
                                     "not a url", "https://93.184.216.34/\x00", "", 42,
                                     "http://[::ffff:127.0.0.1]/hook"])  # the URL validator already refuses it
    def test_a_malformed_url_is_a_422_naming_url(self, register, partner, endpoints, url):
        assert_problem(register(partner, url=url), 422, "url")
        assert endpoints() == []

    def test_private_addresses_are_accepted_when_the_service_allows_them(self, app, register, partner, monkeypatch):
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
        settings = app.config["REFSTD_SETTINGS"]
        if hasattr(settings, "webhook_allow_private"):
            monkeypatch.setattr(settings, "webhook_allow_private", True)
        response = register(partner, url="http://127.0.0.1:9000/hook")
        assert response.status_code == 201, response.get_data(as_text=True)


class TestRefusedPatterns:
    def test_a_malformed_pattern_is_a_422_naming_its_position(self, register, partner, endpoints):
        body = assert_problem(register(partner, event_types=["refstd.scheduler.booking.*", "booking*"]), 422,
                              "event_types.1")
        assert "event_types.0" not in body["errors"]
        assert endpoints() == []

    def test_a_pattern_matching_no_event_delivered_to_webhooks_is_a_422(self, register, partner, endpoints):
        body = assert_problem(register(partner, event_types=["refstd.inventory.instrument.verified"]), 422,
                              "event_types.0")
        assert "refstd.scheduler.booking.confirmed" in body["errors"]["event_types.0"][0]
        assert endpoints() == []

    @pytest.mark.parametrize("event_types", [[], None, "refstd.#", [""], ["refstd.scheduler.booking.*"] * 51])
    def test_missing_or_empty_event_types_are_a_422(self, register, partner, event_types):
        assert_problem(register(partner, event_types=event_types), 422)

    def test_unknown_fields_are_a_422(self, register, partner):
        assert_problem(register(partner, secret="whsec_mine"), 422, "secret")

    def test_a_body_that_is_not_json_is_a_400(self, client, partner):
        response = client.post("/api/v1/webhooks", data="{", content_type="application/json", headers=partner)
        assert_problem(response, 400)


class TestReading:
    def test_an_admin_lists_every_endpoint_and_a_partner_only_its_own(
            self, client, register, admin, partner, other_partner):
        mine = register(partner).get_json()["id"]
        theirs = register(other_partner).get_json()["id"]
        everyone = register(admin).get_json()["id"]

        listed = client.get("/api/v1/webhooks", headers=admin)
        assert [w["id"] for w in listed.get_json()] == [mine, theirs, everyone]
        assert json.loads(listed.headers["X-Pagination"])["total"] == 3
        assert [w["id"] for w in client.get("/api/v1/webhooks", headers=partner).get_json()] == [mine]
        filtered = client.get(f"/api/v1/webhooks?organization_id={OTHER_ORG}", headers=admin).get_json()
        assert [w["id"] for w in filtered] == [theirs]
        # a partner cannot widen its view with the filter
        assert client.get(f"/api/v1/webhooks?organization_id={OTHER_ORG}", headers=partner).get_json() == []

    def test_another_organizations_endpoint_is_not_found_for_a_partner(self, client, register, partner,
                                                                       other_partner, admin):
        theirs = register(other_partner).get_json()["id"]
        assert_problem(client.get(f"/api/v1/webhooks/{theirs}", headers=partner), 404)
        assert client.get(f"/api/v1/webhooks/{theirs}", headers=admin).status_code == 200

    @pytest.mark.parametrize("webhook_id", ["nope", "0" * 36, "x\x00y", "7C3E9A12-5B4D-4F8E-A1C6-9D2E4B6F8A01"])
    def test_an_unknown_or_malformed_id_is_404(self, client, admin, webhook_id):
        assert_problem(client.get(f"/api/v1/webhooks/{webhook_id}", headers=admin), 404)

    @pytest.mark.parametrize("role", ["enterprise", "lab_staff"])
    def test_other_roles_may_not_read_webhooks(self, client, token_for, role):
        assert_problem(client.get("/api/v1/webhooks", headers=token_for(role, PARTNER_ORG)), 403)


class TestDeleting:
    def test_deleting_an_endpoint_deactivates_it_and_hides_it(self, client, register, partner, endpoints):
        created = register(partner).get_json()

        response = client.delete(f"/api/v1/webhooks/{created['id']}", headers=partner)

        assert response.status_code == 204
        assert response.get_data() == b""
        [stored] = endpoints()
        assert stored.active is False  # kept: the delivery log names it
        assert_problem(client.get(f"/api/v1/webhooks/{created['id']}", headers=partner), 404)
        assert client.get("/api/v1/webhooks", headers=partner).get_json() == []
        assert_problem(client.delete(f"/api/v1/webhooks/{created['id']}", headers=partner), 404)
        assert_problem(client.post(f"/api/v1/webhooks/{created['id']}/ping", headers=partner), 404)

    def test_a_partner_cannot_delete_another_organizations_endpoint(self, client, register, partner,
                                                                    other_partner, endpoints):
        theirs = register(other_partner).get_json()["id"]
        assert_problem(client.delete(f"/api/v1/webhooks/{theirs}", headers=partner), 404)
        assert [e.active for e in endpoints()] == [True]

    def test_an_admin_deletes_any_endpoint(self, client, register, partner, admin, endpoints):
        mine = register(partner).get_json()["id"]
        assert client.delete(f"/api/v1/webhooks/{mine}", headers=admin).status_code == 204
        assert [e.active for e in endpoints()] == [False]


class TestPinging:
    def test_a_ping_queues_a_signed_test_event_in_the_delivery_log(self, client, register, partner,
                                                                  notifications):
        endpoint = register(partner).get_json()

        response = client.post(f"/api/v1/webhooks/{endpoint['id']}/ping", headers=partner)

        assert response.status_code == 202, response.get_data(as_text=True)
        [notification] = notifications()
        assert response.get_json() == {"notification_id": notification.id}
        assert notification.channel == "webhook"
        assert notification.event_type == PING_EVENT_TYPE == "refstd.notifier.webhook.ping"
        assert notification.recipient == endpoint["id"]
        assert notification.endpoint_id == endpoint["id"]
        assert notification.organization_id == PARTNER_ORG
        assert notification.status == "pending"
        assert notification.attempts == 0
        event = notification.event
        assert event["specversion"] == "1.0"
        assert event["id"] == notification.event_id
        assert event["type"] == PING_EVENT_TYPE
        assert event["source"] == "/services/notifier"
        assert event["subject"] == endpoint["id"]
        assert event["data"]["endpoint_id"] == endpoint["id"]
        assert event["data"]["requested_by"] == "cl_partner"

    def test_each_ping_is_a_new_event(self, client, register, partner, notifications):
        endpoint = register(partner).get_json()["id"]
        for _ in range(2):
            assert client.post(f"/api/v1/webhooks/{endpoint}/ping", headers=partner).status_code == 202
        assert len({n.event_id for n in notifications()}) == 2

    def test_a_partner_cannot_ping_another_organizations_endpoint(self, client, register, partner, other_partner,
                                                                  notifications, admin):
        theirs = register(other_partner).get_json()["id"]
        assert_problem(client.post(f"/api/v1/webhooks/{theirs}/ping", headers=partner), 404)
        assert notifications() == []
        assert client.post(f"/api/v1/webhooks/{theirs}/ping", headers=admin).status_code == 202


def test_the_row_count_matches_what_the_api_lists(client, register, admin, notifier_db):
    for _ in range(3):
        register(admin)
    with notifier_db.Session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 3
    assert len(client.get("/api/v1/webhooks?page_size=2", headers=admin).get_json()) == 2
