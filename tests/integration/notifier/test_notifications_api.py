"""GET /notifications, GET /notifications/{id}, POST /notifications/{id}/retry."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sqlalchemy import select, update

from services.notifier.delivery import Dispatcher
from services.notifier.models import Notification
from services.notifier.senders import Outcome
from shared.timeutil import utcnow
from tests.integration.notifier.test_delivery import RecordingSender, notify
from tests.unit.notifier.samples import ENTERPRISE_ID, UNIVERSITY_ID

API = "/api/v1/notifications"
CONTRACT_FIELDS = {"id", "event_id", "event_type", "channel", "recipient", "subject", "locale", "status", "attempts",
                   "last_error", "created_at", "sent_at"}


@pytest.fixture
def logged(notifier_db, deliver):
    """Notifications of three events: an enterprise notice (2 emails), a booking of the university (the
    custodian, the university's contact); the booking's emails were attempted: one sent, one dead."""
    notice = notify(deliver, "recalibration.due_soon")
    time.sleep(0.01)  # distinct creation instants: newest first is checkable
    booking = notify(deliver, "booking.requested")

    def script(notification):
        if notification.recipient == "zhang@example.edu":
            return Outcome(ok=True)
        return Outcome(ok=False, error="550 mailbox unavailable", status_code=550, retryable=False)

    later = utcnow() + dt.timedelta(hours=1)
    with notifier_db.transaction() as session:  # only the booking's emails are attempted now
        session.execute(update(Notification).where(Notification.event_id == notice["id"])
                        .values(next_attempt_at=later))
    assert Dispatcher(notifier_db, RecordingSender(script=script), channel="email").run_once() == 2
    with notifier_db.transaction() as session:
        session.execute(update(Notification).where(Notification.event_id == notice["id"])
                        .values(next_attempt_at=utcnow()))
    by_recipient = {n.recipient: n.id for n in notifications_of(notifier_db)}
    return {"notice": notice, "booking": booking, **by_recipient}


def notifications_of(db) -> list[Notification]:
    with db.Session() as session:
        return list(session.scalars(select(Notification)))


class TestList:
    def test_staff_see_every_notification_newest_first(self, client, admin, token_for, logged):
        for headers in (admin, token_for("lab_staff")):
            response = client.get(API, headers=headers)
            assert response.status_code == 200
            body = response.get_json()
            assert len(body) == 4
            assert {n["event_id"] for n in body[:2]} == {logged["booking"]["id"]}
            assert {n["event_id"] for n in body[2:]} == {logged["notice"]["id"]}
            assert all(n.keys() >= CONTRACT_FIELDS for n in body)
            assert json.loads(response.headers["X-Pagination"])["total"] == 4

    def test_filters(self, client, admin, logged):
        def ids(query):
            response = client.get(API + query, headers=admin)
            assert response.status_code == 200, response.get_json()
            return {n["recipient"] for n in response.get_json()}

        assert ids("?status=sent") == {"zhang@example.edu"}
        assert ids("?status=dead") == {"li.custodian@example.com"}
        assert ids("?status=pending") == {"wang@example.com", "anna@example.com"}
        assert ids("?event_type=refstd.scheduler.booking.requested") == {"zhang@example.edu",
                                                                          "li.custodian@example.com"}
        assert ids(f"?organization_id={ENTERPRISE_ID}") == {"wang@example.com", "anna@example.com"}
        assert ids(f"?organization_id={UNIVERSITY_ID}&status=sent") == {"zhang@example.edu"}
        assert ids("?channel=webhook") == set()
        assert ids("?organization_id=not-an-id") == set()

    def test_paging(self, client, admin, logged):
        response = client.get(API + "?page=2&page_size=3", headers=admin)
        assert len(response.get_json()) == 1
        assert json.loads(response.headers["X-Pagination"])["total_pages"] == 2
        assert client.get(API + "?page=99999999999", headers=admin).get_json() == []

    def test_an_enterprise_sees_only_its_own(self, client, token_for, logged):
        own = token_for("enterprise", ENTERPRISE_ID)
        body = client.get(API, headers=own).get_json()
        assert {n["recipient"] for n in body} == {"wang@example.com", "anna@example.com"}
        assert client.get(f"{API}?organization_id={UNIVERSITY_ID}", headers=own).get_json() == []
        assert client.get(API, headers=token_for("enterprise", None)).get_json() == []

    def test_a_partner_sees_its_organizations_but_not_the_custodians(self, client, token_for, logged):
        body = client.get(API, headers=token_for("partner", UNIVERSITY_ID)).get_json()
        assert [n["recipient"] for n in body] == ["zhang@example.edu"]

    @pytest.mark.parametrize(("query", "field"), [
        ("?status=lost", "status"), ("?channel=pigeon", "channel"), ("?page_size=501", "page_size"),
        ("?event_type=" + "x" * 201, "event_type"), ("?event_type=a%00b", "event_type"),
        ("?organization_id=%00", "organization_id"),
    ])
    def test_bad_filters_are_422_naming_the_field(self, client, admin, query, field):
        response = client.get(API + query, headers=admin)
        assert response.status_code == 422
        assert response.content_type == "application/problem+json"
        assert field in response.get_json()["errors"]

    def test_a_token_is_needed(self, client):
        assert client.get(API).status_code == 401


class TestDetail:
    def test_a_notification_with_every_attempt(self, client, admin, logged):
        response = client.get(f"{API}/{logged['li.custodian@example.com']}", headers=admin)
        assert response.status_code == 200
        body = response.get_json()
        assert body.keys() >= CONTRACT_FIELDS
        assert (body["status"], body["attempts"], body["last_error"]) == ("dead", 1, "550 mailbox unavailable")
        [attempt] = body["delivery_attempts"]
        assert (attempt["outcome"], attempt["error"], attempt["status_code"]) == (
            "failed", "550 mailbox unavailable", 550)
        assert body["created_at"].endswith("+00:00") and attempt["attempted_at"].endswith("+00:00")

    def test_a_pending_notification_has_no_attempts(self, client, token_for, logged):
        response = client.get(f"{API}/{logged['wang@example.com']}", headers=token_for("enterprise", ENTERPRISE_ID))
        assert response.status_code == 200
        assert response.get_json()["delivery_attempts"] == [] and response.get_json()["sent_at"] is None

    @pytest.mark.parametrize("role,organization", [("enterprise", ENTERPRISE_ID), ("partner", UNIVERSITY_ID),
                                                   ("enterprise", None)])
    def test_another_organizations_or_the_institutes_notification_is_404(self, client, token_for, logged,
                                                                          role, organization):
        headers = token_for(role, organization)
        for recipient in ("li.custodian@example.com",
                          "zhang@example.edu" if organization == ENTERPRISE_ID else "wang@example.com"):
            response = client.get(f"{API}/{logged[recipient]}", headers=headers)
            assert response.status_code == 404
            assert response.content_type == "application/problem+json"

    @pytest.mark.parametrize("notification_id", ["00000000-0000-4000-8000-000000000000", "nope", "x" * 500])
    def test_unknown_or_malformed_ids_are_404(self, client, admin, notification_id):
        assert client.get(f"{API}/{notification_id}", headers=admin).status_code == 404


class TestRetry:
    def test_staff_retry_a_dead_notification(self, client, admin, token_for, logged, notifier_db):
        for headers in (admin, token_for("lab_staff")):
            response = client.post(f"{API}/{logged['li.custodian@example.com']}/retry", headers=headers)
            assert response.status_code == 200
            body = response.get_json()
            assert (body["status"], body["attempts"]) == ("pending", 1)
        sender = RecordingSender()
        assert Dispatcher(notifier_db, sender, channel="email").run_once() == 3  # with the notice's two
        assert logged["li.custodian@example.com"] in sender.sent
        detail = client.get(f"{API}/{logged['li.custodian@example.com']}", headers=admin).get_json()
        assert detail["status"] == "sent" and len(detail["delivery_attempts"]) == 2

    def test_a_sent_notification_is_409(self, client, admin, logged):
        response = client.post(f"{API}/{logged['zhang@example.edu']}/retry", headers=admin)
        assert response.status_code == 409
        body = response.get_json()
        assert body["code"] == "already_sent" and body["notification_id"] == logged["zhang@example.edu"]

    def test_a_pending_notification_stays_pending(self, client, admin, logged):
        response = client.post(f"{API}/{logged['wang@example.com']}/retry", headers=admin)
        assert response.status_code == 200 and response.get_json()["status"] == "pending"

    @pytest.mark.parametrize("role,organization", [("enterprise", ENTERPRISE_ID), ("partner", UNIVERSITY_ID)])
    def test_only_staff_may_retry(self, client, token_for, logged, notifier_db, role, organization):
        response = client.post(f"{API}/{logged['wang@example.com']}/retry", headers=token_for(role, organization))
        assert response.status_code == 403
        with notifier_db.Session() as session:
            assert session.get(Notification, logged["li.custodian@example.com"]).status == "dead"

    def test_unknown_is_404_and_no_token_401(self, client, admin, logged):
        assert client.post(f"{API}/00000000-0000-4000-8000-000000000000/retry", headers=admin).status_code == 404
        assert client.post(f"{API}/{logged['li.custodian@example.com']}/retry").status_code == 401


class TestMetrics:
    def sample(self, text: str, name: str) -> float:
        for line in text.splitlines():
            if line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def test_delivery_figures_are_read_from_the_database_on_scrape(self, client, logged):
        text = client.get("/metrics").get_data(as_text=True)
        assert self.sample(text, 'refstd_notifier_notifications_sent_total{channel="email"}') == 1
        assert self.sample(text, 'refstd_notifier_delivery_failures_total{channel="email"}') == 1
        assert self.sample(text, 'refstd_notifier_notifications{channel="email",status="dead"}') == 1
        assert self.sample(text, 'refstd_notifier_notifications{channel="email",status="pending"}') == 2
        assert self.sample(text, 'refstd_notifier_retry_backlog{channel="email"}') == 2
        assert self.sample(text, 'refstd_notifier_retry_backlog{channel="webhook"}') == 0
        assert 0 < self.sample(text, 'refstd_notifier_oldest_pending_age_seconds{channel="email"}') < 600
        assert self.sample(text, 'refstd_notifier_oldest_pending_age_seconds{channel="webhook"}') == 0
        assert self.sample(text, "refstd_notifier_metrics_up") == 1

    def test_the_openapi_document_names_the_endpoints(self, client):
        paths = client.get("/openapi.json").get_json()["paths"]
        assert {"/api/v1/notifications", "/api/v1/notifications/{notification_id}",
                "/api/v1/notifications/{notification_id}/retry",
                "/api/v1/organizations/{organization_id}/preferences"} <= paths.keys()
