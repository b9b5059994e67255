"""Who is told what: the notifier's routing rules, without a database."""

from __future__ import annotations

import copy

import pytest

from services.notifier import domain
from services.notifier.domain import Endpoint, OrganizationPreferences, plan_notifications
from tests.unit.notifier.samples import ENTERPRISE_ID, UNIVERSITY_ID, all_events

S = "refstd.scheduler."
EVENTS = all_events()


def event(name: str) -> dict:
    return copy.deepcopy(EVENTS[S + name])


def emails(planned) -> dict[str, domain.PlannedNotification]:
    return {item.recipient: item for item in planned if item.channel == "email"}


def hooks(planned) -> set[str]:
    return {item.recipient for item in planned if item.channel == "webhook"}


class TestNotices:
    def test_an_organization_notice_goes_to_every_contact_in_their_own_language(self):
        planned = plan_notifications(event("recalibration.due_soon"))
        assert emails(planned) == {
            "wang@example.com": ("email", "wang@example.com", "王工", ENTERPRISE_ID, "zh-CN", None),
            "anna@example.com": ("email", "anna@example.com", "Anna Keller", ENTERPRISE_ID, "en", None),
        }

    def test_a_contact_without_a_language_gets_the_organizations_then_chinese(self):
        notice = event("recalibration.overdue")
        for contact in notice["data"]["recipient"]["contacts"]:
            contact["locale"] = None
        assert {i.locale for i in plan_notifications(notice, OrganizationPreferences(locale="en"))} == {"en"}
        assert {i.locale for i in plan_notifications(notice)} == {"zh-CN"}

    def test_contact_languages_are_normalised(self):
        notice = event("recalibration.due_soon")
        notice["data"]["recipient"]["contacts"][0]["locale"] = "en_GB"
        notice["data"]["recipient"]["contacts"][1]["locale"] = "zh-Hans"
        planned = emails(plan_notifications(notice, OrganizationPreferences(locale="en")))
        assert planned["wang@example.com"].locale == "en"
        assert planned["anna@example.com"].locale == "zh-CN"

    def test_contacts_without_a_usable_address_are_skipped_and_repeated_addresses_sent_once(self):
        notice = event("recalibration.due_soon")
        notice["data"]["recipient"]["contacts"] += [
            {"name": "no mail", "email": None, "phone": "0533", "locale": None},
            {"name": "bad", "email": "not an address", "phone": None, "locale": None},
            {"name": "Wang again", "email": " WANG@example.com ", "phone": None, "locale": "en"},
        ]
        planned = plan_notifications(notice)
        assert sorted(i.recipient for i in planned) == ["anna@example.com", "wang@example.com"]
        assert emails(planned)["wang@example.com"].recipient_name == "王工"  # the first one wins

    def test_a_custodian_notice_goes_to_the_custodian_in_chinese_as_the_institutes_own(self):
        for name in ("certificate.renewal_due",):
            planned = plan_notifications(event(name), OrganizationPreferences(email=False, locale="en"))
            assert planned == [("email", "li.custodian@example.com", "李工", None, "zh-CN", None)]
        equipment = EVENTS[S + "recalibration.due_soon:equipment"]
        assert [i.recipient for i in plan_notifications(equipment)] == ["li.custodian@example.com"]

    def test_a_custodian_with_a_language_gets_it(self):
        notice = event("certificate.renewal_due")
        notice["data"]["recipient"]["contacts"][0]["locale"] = "en"
        assert plan_notifications(notice)[0].locale == "en"

    def test_organization_contacts_from_the_read_model_stand_in_when_the_event_has_none(self):
        notice = event("recalibration.due_soon")
        notice["data"]["recipient"]["contacts"] = []
        planned = plan_notifications(notice, organization_contacts=[
            {"name": "周工", "email": "zhou@example.com", "locale": None}])
        assert [(i.recipient, i.locale) for i in planned] == [("zhou@example.com", "zh-CN")]


class TestBookings:
    @pytest.mark.parametrize(("name", "custodian", "requester"), [
        ("booking.requested", True, True),
        ("booking.confirmed", False, True),
        ("booking.rejected", False, True),
        ("booking.cancelled", True, True),
        ("booking.reminder", True, True),
    ])
    def test_who_hears_of_each_booking_event(self, name, custodian, requester):
        planned = emails(plan_notifications(event(name)))
        assert ("li.custodian@example.com" in planned) is custodian
        assert ("zhang@example.edu" in planned) is requester
        assert len(planned) == custodian + requester
        if custodian:
            assert planned["li.custodian@example.com"][3:] == (None, "zh-CN", None)
        assert planned["zhang@example.edu"][2:] == ("Prof. Zhang", UNIVERSITY_ID, "en", None)

    def test_a_request_asks_the_custodian_first_and_roles_are_told_apart(self):
        booking = event("booking.requested")
        planned = plan_notifications(booking)
        assert [i.recipient for i in planned] == ["li.custodian@example.com", "zhang@example.edu"]
        assert domain.recipient_role(booking, "LI.custodian@example.com") == "custodian"
        assert domain.recipient_role(booking, "zhang@example.edu") == "requester"
        assert domain.recipient_role(event("recalibration.due_soon"), "wang@example.com") is None

    def test_a_custodian_who_is_also_a_requester_contact_gets_one_email(self):
        booking = event("booking.cancelled")
        booking["data"]["requester"]["contacts"].append({"name": "李工", "email": "li.custodian@example.com"})
        planned = plan_notifications(booking)
        assert sorted(i.recipient for i in planned) == ["li.custodian@example.com", "zhang@example.edu"]

    def test_a_booking_by_a_client_without_organization_tells_only_the_custodian(self):
        booking = event("booking.cancelled")
        booking["data"]["requested_by"]["organization_id"] = None
        booking["data"]["requester"] = {"kind": "client", "organization_id": None, "name": "cl_lab",
                                        "name_en": None, "contacts": []}
        assert [i.recipient for i in plan_notifications(booking)] == ["li.custodian@example.com"]
        assert plan_notifications(event("booking.confirmed") | {"data": booking["data"]}) == []

    def test_a_booking_without_a_custodian_address_tells_the_requester_only(self):
        booking = event("booking.requested")
        booking["data"]["custodian_email"] = None
        assert [i.recipient for i in plan_notifications(booking)] == ["zhang@example.edu"]

    def test_the_organization_of_an_event(self):
        assert domain.event_organization(event("booking.rejected")) == UNIVERSITY_ID
        assert domain.event_organization(event("recalibration.due_soon")) == ENTERPRISE_ID
        assert domain.event_organization(event("certificate.renewal_due")) is None


class TestPreferences:
    def test_email_off_stops_the_organizations_emails_but_not_the_custodians(self):
        off = OrganizationPreferences(email=False)
        assert plan_notifications(event("recalibration.due_soon"), off) == []
        assert [i.recipient for i in plan_notifications(event("booking.requested"), off)] == [
            "li.custodian@example.com"]

    @pytest.mark.parametrize("pattern", ["refstd.scheduler.booking.requested", "refstd.scheduler.booking.*",
                                         "refstd.scheduler.#", "#"])
    def test_a_muted_type_or_pattern_silences_the_organizations_recipients(self, pattern):
        muted = OrganizationPreferences(muted_event_types=(pattern,))
        endpoints = [Endpoint("mine", UNIVERSITY_ID, ("#",)), Endpoint("admin", None, ("#",))]
        planned = plan_notifications(event("booking.requested"), muted, endpoints)
        assert sorted(i.recipient for i in planned) == ["admin", "li.custodian@example.com"]

    def test_a_mute_of_another_type_changes_nothing(self):
        muted = OrganizationPreferences(muted_event_types=("refstd.scheduler.booking.reminder",
                                                           "refstd.scheduler.recalibration.*"))
        assert len(plan_notifications(event("booking.requested"), muted)) == 2

    def test_webhook_off_stops_the_organizations_endpoints_not_the_admins(self):
        endpoints = [Endpoint("mine", UNIVERSITY_ID, ("#",)), Endpoint("admin", None, ("#",))]
        planned = plan_notifications(event("booking.confirmed"), OrganizationPreferences(webhook=False), endpoints)
        assert hooks(planned) == {"admin"}
        assert emails(planned).keys() == {"zhang@example.edu"}


class TestWebhooks:
    def test_endpoints_of_the_events_organization_and_admin_endpoints_whose_patterns_match(self):
        endpoints = [
            Endpoint("star", UNIVERSITY_ID, ("refstd.scheduler.booking.*",)),
            Endpoint("exact", UNIVERSITY_ID, ("refstd.scheduler.booking.confirmed",)),
            Endpoint("hash", UNIVERSITY_ID, ("refstd.#",)),
            Endpoint("other-type", UNIVERSITY_ID, ("refstd.scheduler.booking.rejected", "refstd.scheduler.*")),
            Endpoint("other-org", ENTERPRISE_ID, ("#",)),
            Endpoint("admin", None, ("refstd.scheduler.#",)),
            Endpoint("admin-other", None, ("refstd.inventory.#",)),
            Endpoint("inactive", UNIVERSITY_ID, ("#",), active=False),
        ]
        planned = plan_notifications(event("booking.confirmed"), None, endpoints)
        assert hooks(planned) == {"star", "exact", "hash", "admin"}
        by_id = {i.recipient: i for i in planned if i.channel == "webhook"}
        assert by_id["star"] == ("webhook", "star", None, UNIVERSITY_ID, None, "star")
        assert by_id["admin"].organization_id is None

    def test_a_custodian_notice_reaches_admin_endpoints_only(self):
        endpoints = [Endpoint("org", ENTERPRISE_ID, ("#",)), Endpoint("admin", None, ("#",))]
        assert hooks(plan_notifications(event("certificate.renewal_due"), None, endpoints)) == {"admin"}

    def test_an_endpoint_is_planned_once_whatever_its_patterns(self):
        endpoints = [Endpoint("twice", ENTERPRISE_ID, ("#", "refstd.scheduler.recalibration.*"))]
        assert hooks(plan_notifications(event("recalibration.due_soon"), None, endpoints)) == {"twice"}

    def test_events_the_notifier_does_not_notify_of_plan_nothing(self):
        endpoints = [Endpoint("admin", None, ("#",))]
        organization = {"type": "refstd.inventory.organization.updated", "data": {"id": ENTERPRISE_ID}}
        assert plan_notifications(organization, None, endpoints) == []
        assert plan_notifications({"type": "refstd.notifier.notification.sent", "data": {}}, None, endpoints) == []


class TestTypes:
    def test_the_types_handled(self):
        assert set(domain.NOTIFIABLE_TYPES) == {t for t in EVENTS if ":" not in t}
        assert domain.READ_MODEL_TYPES == ("refstd.inventory.organization.registered",
                                           "refstd.inventory.organization.updated")

    @pytest.mark.parametrize(("pattern", "matches"), [
        ("refstd.scheduler.booking.confirmed", True), ("refstd.scheduler.booking.*", True),
        ("refstd.scheduler.*", False), ("refstd.#", True), ("#.confirmed", True), ("*.*.booking.*", True),
        ("refstd.scheduler.booking", False), ("refstd.scheduler.booking.confirmed.x", False),
    ])
    def test_type_patterns(self, pattern, matches):
        assert domain.type_matches(pattern, "refstd.scheduler.booking.confirmed") is matches

    def test_a_long_pattern_of_hashes_is_cheap(self):
        assert domain.type_matches("#." * 100 + "x", "refstd.scheduler.booking.confirmed") is False

    @pytest.mark.parametrize(("value", "locale"), [
        ("en", "en"), ("EN-us", "en"), ("zh-CN", "zh-CN"), ("zh_TW", "zh-CN"), ("fr", None), ("", None), (None, None),
    ])
    def test_locales(self, value, locale):
        assert domain.normalise_locale(value) == locale


def test_the_read_model_is_consulted_only_when_the_event_lacks_the_organizations_contacts():
    notice, booking = event("recalibration.due_soon"), event("booking.confirmed")
    assert not domain.lacks_organization_contacts(notice) and not domain.lacks_organization_contacts(booking)
    notice["data"]["recipient"]["contacts"] = []
    booking["data"]["requester"]["contacts"] = []
    assert domain.lacks_organization_contacts(notice) and domain.lacks_organization_contacts(booking)
    assert not domain.lacks_organization_contacts(event("certificate.renewal_due"))
