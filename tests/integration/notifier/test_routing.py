"""Events in, notification rows out: the consumer's handlers on a real database."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlalchemy import func, select

from services.inventory.events import PAYLOADS as INVENTORY_PAYLOADS
from services.notifier import events
from services.notifier.models import KnownOrganization, Notification, Preferences, WebhookEndpoint
from shared.messaging.envelope import make_event
from shared.timeutil import utcnow
from tests.unit.notifier.samples import ENTERPRISE_ID, UNIVERSITY_ID, all_events

S = "refstd.scheduler."
ORGANIZATION_REGISTERED = "refstd.inventory.organization.registered"
ORGANIZATION_UPDATED = "refstd.inventory.organization.updated"


def sample(name: str) -> dict:
    """A fresh copy of a sample event (a new id, so each test's events are distinct)."""
    event = copy.deepcopy(all_events()[S + name])
    return make_event(event["type"], event["source"], event["subject"], event["data"])


def organization_payload(organization_id: str, version: int, contacts: list[dict], name: str = "示例企业") -> dict:
    """An organization event payload as the inventory dumps it."""
    entity = {"id": organization_id, "version": version, "name": name, "name_en": "Sample Co.", "kind": "enterprise",
              "credit_code": None, "contacts": contacts, "address": None, "industry_chains": [],
              "alliance_member": False, "created_at": utcnow(), "updated_at": utcnow()}
    return INVENTORY_PAYLOADS["organization.registered"]().dump(entity)


def rows(db, **filters) -> list[Notification]:
    with db.Session() as session:
        query = select(Notification).filter_by(**filters).order_by(Notification.channel, Notification.recipient)
        return list(session.scalars(query))


def count(db) -> int:
    with db.Session() as session:
        return session.scalar(select(func.count()).select_from(Notification))


def store_preferences(db, organization_id: str, **values) -> None:
    with db.transaction() as session:
        session.add(Preferences(organization_id=organization_id, version=1, **values))


def add_endpoint(db, organization_id: str | None, *patterns: str, active: bool = True) -> str:
    with db.transaction() as session:
        endpoint = WebhookEndpoint(organization_id=organization_id, url="https://hooks.example.com/refstd",
                                   event_types=list(patterns), secret="whsec_dGVzdA==", active=active,
                                   created_by="test-admin")
        session.add(endpoint)
        session.flush()
        return endpoint.id


class TestNotices:
    def test_a_notice_records_one_pending_email_per_contact_in_their_language(self, notifier_db, deliver):
        before = utcnow()
        event = deliver(event=sample("recalibration.due_soon"))
        found = rows(notifier_db)
        assert [(n.channel, n.recipient, n.recipient_name, n.locale, n.organization_id) for n in found] == [
            ("email", "anna@example.com", "Anna Keller", "en", ENTERPRISE_ID),
            ("email", "wang@example.com", "王工", "zh-CN", ENTERPRISE_ID),
        ]
        for notification in found:
            assert notification.status == "pending" and notification.attempts == 0
            assert notification.event == event  # the whole CloudEvent, Chinese text intact
            assert notification.event_id == event["id"] and notification.event_type == event["type"]
            assert before <= notification.next_attempt_at <= utcnow()
            assert notification.sent_at is None and notification.endpoint_id is None

    def test_the_subject_is_rendered_for_the_delivery_log_in_each_language(self, notifier_db, deliver):
        from services.notifier import rendering

        event = deliver(event=sample("recalibration.due_soon"))
        subjects = {n.locale: n.subject for n in rows(notifier_db)}
        assert subjects == {"en": rendering.subject_for(event, "en"), "zh-CN": rendering.subject_for(event, "zh-CN")}
        assert subjects["en"] and subjects["zh-CN"] and subjects["en"] != subjects["zh-CN"]

    def test_a_booking_request_asks_the_custodian_and_acknowledges_the_requester(self, notifier_db, deliver):
        from services.notifier import rendering

        event = deliver(event=sample("booking.requested"))
        found = {n.recipient: n for n in rows(notifier_db)}
        assert found.keys() == {"li.custodian@example.com", "zhang@example.edu"}
        assert found["li.custodian@example.com"].organization_id is None
        assert found["zhang@example.edu"].organization_id == UNIVERSITY_ID
        assert found["li.custodian@example.com"].subject == rendering.subject_for(event, "zh-CN", role="custodian")
        assert found["zhang@example.edu"].subject == rendering.subject_for(event, "en", role="requester")

    def test_a_custodian_notice_goes_to_the_custodian(self, notifier_db, deliver):
        deliver(event=sample("certificate.renewal_due"))
        assert [(n.recipient, n.locale, n.organization_id) for n in rows(notifier_db)] == [
            ("li.custodian@example.com", "zh-CN", None)]


class TestRedelivery:
    def test_a_redelivered_event_records_nothing_again(self, notifier_db, deliver):
        event = deliver(event=sample("booking.cancelled"))
        assert count(notifier_db) == 2
        deliver(event=event)  # the inbox says: seen
        with notifier_db.transaction() as session:  # past the inbox too (e.g. another consumer name)
            events.handler_for(event["type"])(session, event)
        assert count(notifier_db) == 2

    def test_a_sent_notification_stays_sent_when_its_event_comes_again(self, notifier_db, deliver):
        event = deliver(event=sample("booking.confirmed"))
        with notifier_db.transaction() as session:
            session.execute(Notification.__table__.update().values(status="sent", sent_at=utcnow()))
        with notifier_db.transaction() as session:
            events.handler_for(event["type"])(session, event)
        assert [(n.status, n.attempts) for n in rows(notifier_db)] == [("sent", 0)]


class TestPreferences:
    def test_email_off_records_no_email_for_the_organization(self, notifier_db, deliver):
        store_preferences(notifier_db, ENTERPRISE_ID, email=False)
        deliver(event=sample("recalibration.due_soon"))
        assert count(notifier_db) == 0

    def test_a_muted_pattern_records_nothing_for_the_organization_but_the_custodian_still_hears(
            self, notifier_db, deliver):
        store_preferences(notifier_db, UNIVERSITY_ID, muted_event_types=["refstd.scheduler.booking.*"])
        add_endpoint(notifier_db, UNIVERSITY_ID, "#")
        deliver(event=sample("booking.requested"))
        assert [n.recipient for n in rows(notifier_db)] == ["li.custodian@example.com"]

    def test_the_organizations_language_applies_to_contacts_without_one(self, notifier_db, deliver):
        store_preferences(notifier_db, ENTERPRISE_ID, locale="en")
        event = sample("recalibration.overdue")
        event["data"]["recipient"]["contacts"][0]["locale"] = None
        deliver(event=event)
        assert {n.recipient: n.locale for n in rows(notifier_db)} == {"wang@example.com": "en",
                                                                     "anna@example.com": "en"}

    def test_webhook_off_records_no_delivery_to_the_organizations_endpoints(self, notifier_db, deliver):
        store_preferences(notifier_db, UNIVERSITY_ID, webhook=False)
        add_endpoint(notifier_db, UNIVERSITY_ID, "refstd.scheduler.booking.*")
        admin = add_endpoint(notifier_db, None, "refstd.scheduler.#")
        deliver(event=sample("booking.confirmed"))
        assert [(n.channel, n.recipient) for n in rows(notifier_db)] == [
            ("email", "zhang@example.edu"), ("webhook", admin)]


class TestWebhooks:
    def test_matching_active_endpoints_of_the_organization_and_admins_get_a_delivery(self, notifier_db, deliver):
        mine = add_endpoint(notifier_db, UNIVERSITY_ID, "refstd.scheduler.booking.*")
        add_endpoint(notifier_db, UNIVERSITY_ID, "refstd.scheduler.recalibration.*")
        add_endpoint(notifier_db, UNIVERSITY_ID, "#", active=False)
        add_endpoint(notifier_db, ENTERPRISE_ID, "#")
        admin = add_endpoint(notifier_db, None, "#")
        deliver(event=sample("booking.rejected"))
        webhooks = rows(notifier_db, channel="webhook")
        assert {(n.recipient, n.endpoint_id, n.organization_id) for n in webhooks} == {
            (mine, mine, UNIVERSITY_ID), (admin, admin, None)}
        assert all(n.locale is None and n.subject is None and n.status == "pending" for n in webhooks)


class TestReadModel:
    def contacts(self, email: str) -> list[dict]:
        return [{"name": "周工", "email": email, "phone": None, "locale": None}]

    def known(self, db, organization_id: str) -> KnownOrganization | None:
        with db.Session() as session:
            return session.get(KnownOrganization, organization_id)

    def test_organization_events_keep_the_newest_state(self, notifier_db, deliver):
        deliver(ORGANIZATION_REGISTERED, organization_payload(ENTERPRISE_ID, 1, self.contacts("v1@example.com")))
        deliver(ORGANIZATION_UPDATED, organization_payload(ENTERPRISE_ID, 3, self.contacts("v3@example.com"),
                                                           name="新名称"))
        known = self.known(notifier_db, ENTERPRISE_ID)
        assert (known.name, known.source_version, known.contacts[0]["email"]) == ("新名称", 3, "v3@example.com")
        assert known.kind == "enterprise" and known.name_en == "Sample Co."

    def test_an_older_or_replayed_version_changes_nothing(self, notifier_db, deliver):
        newest = deliver(ORGANIZATION_UPDATED, organization_payload(ENTERPRISE_ID, 3, self.contacts("v3@example.com")))
        deliver(ORGANIZATION_UPDATED, organization_payload(ENTERPRISE_ID, 2, self.contacts("v2@example.com")))
        replay = make_event(newest["type"], newest["source"], newest["subject"],
                            {**newest["data"], "contacts": self.contacts("other@example.com")})
        deliver(event=replay)  # same version, another message id
        known = self.known(notifier_db, ENTERPRISE_ID)
        assert (known.source_version, known.contacts[0]["email"]) == (3, "v3@example.com")

    def test_the_read_models_contacts_stand_in_for_a_requester_the_scheduler_knew_nothing_of(
            self, notifier_db, deliver):
        deliver(ORGANIZATION_REGISTERED, organization_payload(UNIVERSITY_ID, 1, self.contacts("zhou@example.edu")))
        event = sample("booking.confirmed")
        event["data"]["requester"]["contacts"] = []
        deliver(event=event)
        assert [(n.recipient, n.locale, n.organization_id) for n in rows(notifier_db)] == [
            ("zhou@example.edu", "zh-CN", UNIVERSITY_ID)]

    def test_an_event_nobody_is_to_hear_of_records_nothing(self, notifier_db, deliver):
        event = sample("booking.confirmed")
        event["data"]["requester"]["contacts"] = []
        deliver(event=event)
        assert count(notifier_db) == 0


class TestSchemas:
    @pytest.mark.parametrize("event_type", sorted(all_events()))
    def test_every_sample_event_is_valid(self, event_type):
        event = all_events()[event_type]
        assert events.NOTIFIER_SCHEMAS[event["type"]].validate(event["data"]) == {}
        assert events.handler_for(event["type"]) is not None

    def test_a_real_organization_payload_is_valid(self):
        payload = organization_payload(ENTERPRISE_ID, 1, [])
        assert events.NOTIFIER_SCHEMAS[ORGANIZATION_REGISTERED].validate(payload) == {}

    @pytest.mark.parametrize(("name", "change", "field"), [
        ("recalibration.due_soon", {"recipient": None}, "recipient"),
        ("recalibration.due_soon", {"items": []}, "items"),
        ("recalibration.overdue", {"recipient": {"kind": "alien", "contacts": []}}, "recipient"),
        ("certificate.renewal_due", {"recipient": {"kind": "custodian", "contacts": "li@example.com"}},
         "recipient"),
        ("booking.confirmed", {"id": None}, "id"),
        ("booking.cancelled", {"status": "lost"}, "status"),
        ("booking.requested", {"requested_by": {"organization_id": "x" * 37}}, "requested_by"),
        ("recalibration.due_soon", {"organization_id": "x" * 37}, "organization_id"),
    ])
    def test_a_malformed_payload_is_refused(self, name, change, field):
        data = {**all_events()[S + name]["data"], **change}
        assert field in events.NOTIFIER_SCHEMAS[S + name].validate(data)

    def test_a_malformed_organization_is_refused(self):
        payload = organization_payload(ENTERPRISE_ID, 1, [])
        assert "version" in events.NOTIFIER_SCHEMAS[ORGANIZATION_REGISTERED].validate({**payload, "version": "2"})
        missing = {k: v for k, v in payload.items() if k != "kind"}
        assert "kind" in events.NOTIFIER_SCHEMAS[ORGANIZATION_UPDATED].validate(missing)

    def test_other_types_have_no_handler(self):
        assert events.handler_for("refstd.inventory.instrument.registered") is None
        assert events.handler_for("refstd.notifier.notification.sent") is None


def test_timestamps_in_rows_are_aware(notifier_db, deliver):
    deliver(event=sample("booking.reminder"))
    assert all(n.created_at.tzinfo is not None and n.created_at.utcoffset() == dt.timedelta(0)
               for n in rows(notifier_db))
