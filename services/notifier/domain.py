"""Who is told what: the notifier's routing rules, as plain functions (no Flask, no database).

An event from the scheduler becomes planned notifications, one per (channel, recipient):

- a notice (``recalibration.due_soon``, ``recalibration.overdue``, ``certificate.renewal_due``) goes by
  email to every contact of its recipient: an organization's contacts, or the custodian of a standard;
- a booking event goes to the requesting organization's contacts and, where the rule says so, to the
  custodian of the standard (``BOOKING_AUDIENCES``);
- every active webhook endpoint whose patterns match the event type and that belongs to the event's
  organization, or to nobody (an admin endpoint: every event), gets it too.

An organization's preferences decide about its own recipients only (its contacts and its endpoints):
the institute's custodian and admin endpoints are told whatever an organization chose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shared.messaging.topology import topic_matches

SCHEDULER = "refstd.scheduler."
INVENTORY = "refstd.inventory."

#: Notices of what is due: one event per recipient, listing the items.
NOTICE_TYPES = tuple(SCHEDULER + name for name in (
    "recalibration.due_soon", "recalibration.overdue", "certificate.renewal_due"))

#: Booking events and who hears of each: the requesting organization's contacts and/or the custodian.
BOOKING_AUDIENCES: dict[str, tuple[str, ...]] = {
    SCHEDULER + "booking.requested": ("custodian", "requester"),  # approval needed; acknowledgement
    SCHEDULER + "booking.confirmed": ("requester",),
    SCHEDULER + "booking.rejected": ("requester",),
    SCHEDULER + "booking.cancelled": ("requester", "custodian"),
    SCHEDULER + "booking.reminder": ("requester", "custodian"),
}
BOOKING_TYPES = tuple(BOOKING_AUDIENCES)

#: Every event type the notifier turns into notifications.
NOTIFIABLE_TYPES = NOTICE_TYPES + BOOKING_TYPES

#: The inventory events that feed the read model of organizations (names, contacts, languages).
READ_MODEL_TYPES = (INVENTORY + "organization.registered", INVENTORY + "organization.updated")

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"
RECIPIENT_KINDS = ("organization", "custodian")


@dataclass(frozen=True)
class OrganizationPreferences:
    """An organization's choices; these defaults apply while it has stored none."""

    locale: str = DEFAULT_LOCALE
    email: bool = True
    webhook: bool = True
    muted_event_types: tuple[str, ...] = field(default_factory=tuple)


DEFAULT_PREFERENCES = OrganizationPreferences()


@dataclass(frozen=True)
class Endpoint:
    """What routing needs to know of a webhook endpoint."""

    id: str
    organization_id: str | None
    event_types: tuple[str, ...]
    active: bool = True


class PlannedNotification(NamedTuple):
    channel: str  # email | webhook
    recipient: str  # the email address, or the endpoint id
    recipient_name: str | None
    organization_id: str | None  # whose notification it is (None: the institute's own)
    locale: str | None  # the email's language; None for webhooks
    endpoint_id: str | None


# -- small rules ---------------------------------------------------------------------------------

def type_matches(pattern: str, event_type: str) -> bool:
    """An event type given exactly, or a topic pattern (``*`` one word, ``#`` zero or more)."""
    return pattern == event_type or topic_matches(pattern, event_type)


def matches_any(patterns: Iterable[str], event_type: str) -> bool:
    return any(type_matches(pattern, event_type) for pattern in patterns)


def is_notifiable(event_type: str) -> bool:
    return event_type in NOTIFIABLE_TYPES


def is_muted(preferences: OrganizationPreferences, event_type: str) -> bool:
    return matches_any(preferences.muted_event_types, event_type)


def normalise_locale(value: str | None) -> str | None:
    """``zh-CN`` or ``en`` for what a contact record says (``en-GB``, ``zh_cn``, ``zh-Hans``...); None if
    it says nothing usable."""
    if not value or not isinstance(value, str):
        return None
    language = value.strip().replace("_", "-").split("-")[0].lower()
    if language == "en":
        return "en"
    if language == "zh":
        return "zh-CN"
    return None


def contact_locale(contact: Mapping, preferences: OrganizationPreferences | None = None) -> str:
    """A contact's own language wins; else the organization's; else zh-CN."""
    return (normalise_locale(contact.get("locale"))
            or normalise_locale(preferences.locale if preferences else None)
            or DEFAULT_LOCALE)


def email_address(value) -> str | None:
    """The address if it looks like one (something@domain, no spaces), stripped; else None."""
    if not isinstance(value, str):
        return None
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address) or len(address) > 320:
        return None
    return address


def event_organization(event: Mapping) -> str | None:
    """The organization an event is about: a notice's recipient organization, or a booking's requester."""
    data = event.get("data") or {}
    if event.get("type") in BOOKING_AUDIENCES:
        requested_by = data.get("requested_by") or {}
        requester = data.get("requester") or {}
        return requested_by.get("organization_id") or requester.get("organization_id")
    recipient = data.get("recipient") or {}
    return data.get("organization_id") or recipient.get("organization_id")


def recipient_role(event: Mapping, address: str) -> str | None:
    """For a booking email: ``custodian`` (of the standard: asked to approve, told of changes) or
    ``requester``; None for other events."""
    if event.get("type") not in BOOKING_AUDIENCES:
        return None
    custodian = email_address((event.get("data") or {}).get("custodian_email"))
    return "custodian" if custodian and custodian.lower() == address.strip().lower() else "requester"


# -- planning ------------------------------------------------------------------------------------

def _contacts_of(recipient: Mapping | None, fallback: Sequence[Mapping] | None) -> list[Mapping]:
    contacts = list((recipient or {}).get("contacts") or [])
    return contacts or list(fallback or [])


def lacks_organization_contacts(event: Mapping) -> bool:
    """Whether the event names an organization to tell but carries none of its contacts (so the read
    model's are worth looking up)."""
    event_type = event.get("type")
    data = event.get("data") or {}
    if event_type in NOTICE_TYPES:
        recipient = data.get("recipient") or {}
        return recipient.get("kind") == "organization" and not recipient.get("contacts")
    if event_type in BOOKING_AUDIENCES and "requester" in BOOKING_AUDIENCES[event_type]:
        return event_organization(event) is not None and not (data.get("requester") or {}).get("contacts")
    return False


def email_recipients(event: Mapping, preferences: OrganizationPreferences | None = None,
                     organization_contacts: Sequence[Mapping] | None = None) -> list[PlannedNotification]:
    """Every email an event calls for, before preferences, without duplicates (first one wins).

    ``organization_contacts``: the read model's contacts of the event's organization, used when the
    event carries none for it.
    """
    event_type = event.get("type")
    data = event.get("data") or {}
    organization_id = event_organization(event)
    planned: list[PlannedNotification] = []

    def add_contacts(contacts: Iterable[Mapping], owner: str | None, prefs: OrganizationPreferences | None):
        for contact in contacts:
            if not isinstance(contact, Mapping):
                continue
            address = email_address(contact.get("email"))
            if address:
                planned.append(PlannedNotification("email", address, contact.get("name"), owner,
                                                   contact_locale(contact, prefs), None))

    if event_type in NOTICE_TYPES:
        recipient = data.get("recipient") or {}
        if recipient.get("kind") == "custodian":
            add_contacts(_contacts_of(recipient, None), None, None)
        elif recipient.get("kind") == "organization":
            add_contacts(_contacts_of(recipient, organization_contacts), organization_id, preferences)
    elif event_type in BOOKING_AUDIENCES:
        for audience in BOOKING_AUDIENCES[event_type]:
            if audience == "custodian":
                add_contacts([{"name": None, "email": data.get("custodian_email")}], None, None)
            elif organization_id is not None:
                add_contacts(_contacts_of(data.get("requester"), organization_contacts), organization_id,
                             preferences)
    return deduplicate(planned)


def deduplicate(planned: Iterable[PlannedNotification]) -> list[PlannedNotification]:
    """One notification per channel and recipient (addresses compared case-insensitively)."""
    seen: set[tuple[str, str]] = set()
    unique: list[PlannedNotification] = []
    for item in planned:
        key = (item.channel, item.recipient.lower())
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def webhook_recipients(event: Mapping, endpoints: Iterable[Endpoint]) -> list[PlannedNotification]:
    """Active endpoints subscribed to the event's type that belong to its organization or to nobody."""
    event_type = event.get("type") or ""
    organization_id = event_organization(event)
    planned = [
        PlannedNotification("webhook", endpoint.id, None, endpoint.organization_id, None, endpoint.id)
        for endpoint in endpoints
        if endpoint.active
        and (endpoint.organization_id is None or endpoint.organization_id == organization_id)
        and matches_any(endpoint.event_types, event_type)
    ]
    return deduplicate(planned)


def plan_notifications(event: Mapping, preferences: OrganizationPreferences | None = None,
                       endpoints: Iterable[Endpoint] = (), *,
                       organization_contacts: Sequence[Mapping] | None = None) -> list[PlannedNotification]:
    """The notifications an event calls for, given its organization's preferences (None: the defaults)
    and the webhook endpoints that might want it. Events the notifier does not notify of: none."""
    event_type = event.get("type") or ""
    if not is_notifiable(event_type):
        return []
    preferences = preferences or DEFAULT_PREFERENCES
    organization_id = event_organization(event)
    muted = is_muted(preferences, event_type)

    def allowed(item: PlannedNotification) -> bool:
        if item.organization_id is None or item.organization_id != organization_id:
            return True  # the institute's own recipients: an organization's choices do not apply
        if muted:
            return False
        return preferences.email if item.channel == "email" else preferences.webhook

    planned = email_recipients(event, preferences, organization_contacts) + webhook_recipients(event, endpoints)
    return [item for item in planned if allowed(item)]
