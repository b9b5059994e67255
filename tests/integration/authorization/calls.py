"""How each row of the matrix is called: which seeded resources fill the path, and a valid body, so that
the only reason for a refusal is who is calling. Lists also say which of their items a caller may see.

A path placeholder ``<name_id>`` is filled with organization a's (or the institute's) resource ``name``
from the world; ``params`` names another resource. Rows not listed here are plain calls with no body.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from icalendar import Calendar

from tests.integration.authorization.matrix import Caller

# Each callable gets the world (tests/integration/authorization/world.py) and returns what to send.
Make = Callable[[Any], dict]


class OwnOrganizationOnly:
    """A list of which an enterprise or partner client sees its own organization's items only, the
    institute's clients everyone's. ``owner`` names an item's organization, ``"institute"`` for the
    institute's own (a custodian's notice, an endpoint receiving every organization's events).

    Checked whether or not the list is filtered by organization a: organization a's items are listed to
    the institute and to organization a's clients, and nobody sees what is neither its own nor allowed.
    """

    def __init__(self, owner: Callable[[dict], str | None]) -> None:
        self.owner = owner

    def problems(self, response, caller: Caller, world) -> list[str]:
        owners = {self.owner(item) for item in response.get_json()}
        own = world.organization_of(caller)
        problems = [] if caller.is_staff else [f"sees {world.whose(o)} items" for o in sorted(owners - {own})]
        if (caller.is_staff or own == world.organization_a) and world.organization_a not in owners:
            problems.append("does not see organization a's items")
        return problems


class PublicOnly:
    """A list of standards of which clients outside the institute see the public ones only (and, for the
    catalogue, so does the institute)."""

    def __init__(self, institute_sees_all: bool = True) -> None:
        self.institute_sees_all = institute_sees_all

    def problems(self, response, caller: Caller, world) -> list[str]:
        ids = {item["id"] for item in response.get_json()}
        problems = [] if world.ids["standard"] in ids else ["the public standard is not listed"]
        private_listed = world.ids["private_standard"] in ids
        if private_listed and not (caller.is_staff and self.institute_sees_all):
            problems.append("a standard that is not public is listed")
        if not private_listed and caller.is_staff and self.institute_sees_all:
            problems.append("the institute does not see its standard that is not public")
        return problems


class BookingDetailsOwnOnly:
    """A calendar feed that shows every booking, with its purpose to the institute and to the booking
    organization's clients only: to anyone else it is busy time."""

    def problems(self, response, caller: Caller, world) -> list[str]:
        events = Calendar.from_ical(response.get_data()).walk("VEVENT")
        summaries = {str(event["SUMMARY"]) for event in events}
        problems = []
        for organization in (world.organization_a, world.organization_b):
            shown = world.purpose_of(organization) in summaries
            if shown != (caller.is_staff or world.organization_of(caller) == organization):
                problems.append(f"{'shows' if shown else 'hides'} the purpose of {world.whose(organization)} "
                                "booking")
        if len(events) < 3:
            problems.append(f"{len(events)} events, not the two bookings and the blackout")
        return problems


Scope = OwnOrganizationOnly | PublicOnly | BookingDetailsOwnOnly


@dataclass(frozen=True)
class Call:
    params: dict[str, str] = field(default_factory=dict)  # placeholder -> resource name in the world
    query: Make | None = None
    json: Make | None = None
    form: Make | None = None
    files: Make | None = None  # multipart parts, made afresh for each request (a stream is read once)
    scope: Scope | None = None  # what a list or feed may show a caller


PLAIN = Call()
NOT_PUBLIC = {"standard_id": "private_standard", "blackout_id": "private_blackout"}
BY_ORGANIZATION_ID = OwnOrganizationOnly(lambda item: item["organization_id"] or "institute")
DUE_ITEMS = OwnOrganizationOnly(lambda item: item["organization_id"] if item["item_kind"] == "instrument"
                                else "institute")


def for_organization_a(world) -> dict:
    return {"organization_id": world.organization_a}


def _csv(_world) -> dict:
    content = "name,category,serial_number,interval_months\r\n数字指示秤,scale,MX-IMPORT-1,12\r\n"
    return {"file": (io.BytesIO(content.encode()), "仪器清单.csv")}


INVENTORY = {
    "POST /auth/token": Call(form=lambda w: {"grant_type": "client_credentials", "client_id": w.bootstrap[0],
                                             "client_secret": w.bootstrap[1]}),
    "GET /catalogue": Call(scope=PublicOnly(institute_sees_all=False)),
    "POST /clients": Call(json=lambda w: {"name": "示例大学系统", "role": "partner",
                                          "organization_id": w.organization_a}),
    "GET /organizations": Call(scope=OwnOrganizationOnly(lambda item: item["id"])),
    "POST /organizations": Call(json=lambda w: {"name": "示例工业研究院", "kind": "university"}),
    "PATCH /organizations/<organization_id>": Call(json=lambda w: {
        "contacts": [{"name": "王工", "email": "wang@example.com", "locale": "en"}]}),
    "PATCH /organizations/<organization_id> (name)": Call(json=lambda w: {"name": "示例氢能新材料股份有限公司"}),
    "GET /standards": Call(scope=PublicOnly()),
    "POST /standards": Call(json=lambda w: {
        "code": "MX-T-009", "name": "温度标准装置", "discipline": "thermal", "measurand": "temperature",
        "range": {"min": -40, "max": 150, "unit": "degC"},
        "assessment_certificate": {"issued_on": w.date(-10)}}),
    "GET /standards/<standard_id> (not public)": Call(params=NOT_PUBLIC),
    "PATCH /standards/<standard_id>": Call(json=lambda w: {"name_en": "Gas flow standard (sonic nozzles)"}),
    "POST /standards/<standard_id>/status": Call(json=lambda w: {"status": "suspended",
                                                                 "reason": "主标准器送检"}),
    "POST /standards/<standard_id>/checks": Call(json=lambda w: {
        "kind": "repeatability", "performed_on": w.date(-1), "value": 0.02, "limit": 0.05, "unit": "%"}),
    "POST /standards/<standard_id>/equipment": Call(json=lambda w: {
        "role": "auxiliary", "name": "数字压力计", "serial_number": "MX-AUX-2",
        "calibration_interval_months": 12}),
    "PATCH /equipment/<equipment_id>": Call(json=lambda w: {"model": "MF-200B"}),
    "POST /equipment/<equipment_id>/calibrations": Call(json=lambda w: {
        "calibrated_on": w.date(-1), "result": "pass", "certificate_number": "JZ-2026-0002"}),
    "GET /instruments": Call(scope=BY_ORGANIZATION_ID),
    "GET /instruments (organization a)": Call(query=for_organization_a, scope=BY_ORGANIZATION_ID),
    "POST /instruments": Call(json=lambda w: {
        "organization_id": w.organization_a, "name": "可燃气体检测报警器", "category": "gas detector",
        "serial_number": "MX-GD-7", "interval_months": 12, "regulation": "JJG 693-2011"}),
    "POST /instruments/import": Call(query=lambda w: {"organization_id": w.organization_a}, files=_csv),
    "PATCH /instruments/<instrument_id>": Call(json=lambda w: {"location": "二号车间"}),
    "POST /instruments/<instrument_id>/verifications": Call(json=lambda w: {
        "verified_on": w.date(-1), "result": "pass", "certificate_number": "JD-2026-0002"}),
}

SCHEDULER = {
    "GET /due": Call(query=lambda w: {"within_days": 3660}, scope=DUE_ITEMS),
    "GET /due (organization a)": Call(query=lambda w: {"within_days": 3660, "organization_id": w.organization_a},
                                      scope=DUE_ITEMS),
    "PUT /policies": Call(json=lambda w: {
        "instrument_lead_days": [30, 14, 7, 0], "equipment_lead_days": [60, 30, 7, 0],
        "certificate_lead_days": [270, 210, 180], "overdue_repeat_days": 7, "overdue_max_notices": 4,
        "booking_reminder_hours": 24}),
    "GET /bookings": Call(scope=OwnOrganizationOnly(
        lambda item: item["requested_by"]["organization_id"] or "institute")),
    "POST /bookings": Call(json=lambda w: {"standard_id": w.ids["standard"], "starts_at": w.at(20, 9),
                                           "ends_at": w.at(20, 12), "purpose": "质子交换膜透气性研究"}),
    "POST /bookings (not public)": Call(json=lambda w: {
        "standard_id": w.ids["private_standard"], "starts_at": w.at(20, 9), "ends_at": w.at(20, 12),
        "purpose": "质子交换膜透气性研究"}),
    "POST /bookings/<booking_id>/reject": Call(json=lambda w: {"reason": "该时段安排了期间核查"}),
    "POST /bookings/<booking_id>/cancel": Call(json=lambda w: {"reason": "计划调整"}),
    "GET /standards/<standard_id>/availability": Call(query=lambda w: {"from": w.at(1, 0), "to": w.at(31, 0)}),
    "GET /standards/<standard_id>/availability (not public)": Call(
        params=NOT_PUBLIC, query=lambda w: {"from": w.at(1, 0), "to": w.at(31, 0)}),
    "GET /standards/<standard_id>/blackouts (not public)": Call(params=NOT_PUBLIC),
    "POST /standards/<standard_id>/blackouts": Call(json=lambda w: {
        "starts_at": w.at(25, 8), "ends_at": w.at(26, 18), "reason": "主标准器送上级计量机构校准"}),
    "GET /blackouts/<blackout_id> (not public)": Call(params=NOT_PUBLIC),
    "GET /standards/<standard_id>/calendar.ics": Call(scope=BookingDetailsOwnOnly()),
    "GET /standards/<standard_id>/calendar.ics (not public)": Call(params=NOT_PUBLIC),
}

NOTIFIER = {
    "GET /notifications": Call(scope=BY_ORGANIZATION_ID),
    "GET /notifications (organization a)": Call(query=for_organization_a, scope=BY_ORGANIZATION_ID),
    "GET /webhooks": Call(scope=BY_ORGANIZATION_ID),
    "GET /webhooks (organization a)": Call(query=for_organization_a, scope=BY_ORGANIZATION_ID),
    "POST /webhooks": Call(json=lambda w: {"organization_id": w.organization_a, "url": w.webhook_url,
                                           "event_types": ["refstd.scheduler.booking.confirmed"]}),
    "PUT /organizations/<organization_id>/preferences": Call(json=lambda w: {
        "locale": "en", "muted_event_types": ["refstd.scheduler.booking.reminder"]}),
}

CALLS = {"inventory": INVENTORY, "scheduler": SCHEDULER, "notifier": NOTIFIER}


def call_of(service: str, title: str) -> Call:
    """The call of a row, by its title without the service (``"POST /standards/<standard_id>/checks"``)."""
    return CALLS[service].get(title, PLAIN)
