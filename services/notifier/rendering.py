"""Email notices rendered from the event alone: subject, text and HTML parts in the reader's locale, and
the iCalendar invitation that booking confirmations and cancellations carry.

Templates live in ``templates/``, one set per event type and locale (``<type>.<locale>.subject``,
``.txt``, ``.html``; the type without the ``refstd.scheduler.`` prefix). Shared pieces start with ``_``:
``_layout.html`` (the one HTML layout), ``_notice.*`` and ``_booking.*`` (bodies the event templates
extend) and ``_strings.<locale>.j2`` (wording macros: days left, statuses, reasons, greetings; HTML
templates import them as ``html:_strings.<locale>.j2`` so that they escape what they interpolate).
A variable a template uses but the context lacks is an error (StrictUndefined), never a blank.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event, vCalAddress, vText
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")
EVENT_PREFIX = "refstd.scheduler."
NOTICE_TYPES = ("recalibration.due_soon", "recalibration.overdue", "certificate.renewal_due")
BOOKING_TYPES = ("booking.requested", "booking.confirmed", "booking.rejected", "booking.cancelled",
                 "booking.reminder")
#: Every event type an email can be made from (full CloudEvents types).
EVENT_TYPES = tuple(EVENT_PREFIX + name for name in NOTICE_TYPES + BOOKING_TYPES)
ROLES = ("requester", "custodian")

DEFAULT_ZONE = "Asia/Shanghai"
#: Renewal (复查考核) of an assessment certificate must be applied for at least 6 months (180 days)
#: before it expires; the 180-day point is the legal deadline (domain.md, rule 3).
RENEWAL_APPLICATION_LEAD = dt.timedelta(days=180)
#: The scheduler's calendar feed names each booking ``<id>@refstd``: an invitation updates that event.
UID_DOMAIN = "refstd"
PRODID = "-//refstd//Reference standards notifier 1.0//EN"
# booking event -> (iTIP METHOD, VEVENT STATUS) of the invitation it carries.
CALENDAR_METHODS = {"booking.confirmed": ("REQUEST", "CONFIRMED"), "booking.cancelled": ("CANCEL", "CANCELLED")}

CalendarMethod = Literal["REQUEST", "CANCEL"]

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


class UnsupportedEvent(LookupError):
    """No email is made for this event type."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    calendar: bytes | None = None
    calendar_method: CalendarMethod | None = None
    locale: str = DEFAULT_LOCALE  # the locale actually rendered (after the fallback)


# -- public API -----------------------------------------------------------------------------------

def resolve_locale(locale: str | None) -> str:
    """``en``, ``en-US``, ``en_GB`` -> ``en``; ``zh``, ``zh_CN``, ``zh-Hans`` -> ``zh-CN``; anything else -> zh-CN."""
    if not locale:
        return DEFAULT_LOCALE
    language = locale.strip().replace("_", "-").split("-")[0].lower()
    return "en" if language == "en" else DEFAULT_LOCALE


def template_name(event_type: str) -> str:
    """``refstd.scheduler.booking.confirmed`` -> ``booking.confirmed`` (raises UnsupportedEvent)."""
    name = event_type.removeprefix(EVENT_PREFIX) if isinstance(event_type, str) else ""
    if name not in NOTICE_TYPES + BOOKING_TYPES or not event_type.startswith(EVENT_PREFIX):
        raise UnsupportedEvent(f"no email for event type {event_type!r}")
    return name


def subject_for(event: dict, locale: str | None, *, role: str | None = None) -> str:
    """The subject line an email about ``event`` gets in ``locale`` (for listing notifications)."""
    name = template_name(event.get("type"))
    locale = resolve_locale(locale)
    context = _context(name, event, locale, recipient_name=None, role=role)
    return _subject(name, locale, context)


def render_email(event: dict, locale: str | None, *, recipient_name: str | None = None, role: str | None = None,
                 recipient: str | None = None, organizer: str | None = None) -> RenderedEmail:
    """Subject, text and HTML (and for booking confirmations/cancellations an invitation) for ``event``.

    ``role``: ``requester`` or ``custodian`` for booking emails (the custodian is asked to approve a
    request). ``recipient``: the reader's address, the invitation's ATTENDEE. ``organizer``: the
    service mailbox (``Name <address>``), the invitation's ORGANIZER; default MAIL_FROM.
    """
    name = template_name(event.get("type"))
    locale = resolve_locale(locale)
    context = _context(name, event, locale, recipient_name=recipient_name, role=role)
    context["subject"] = subject = _subject(name, locale, context)
    env = _environment()
    text = env.get_template(f"{name}.{locale}.txt").render(context)
    html = env.get_template(f"{name}.{locale}.html").render(context)
    calendar = method = None
    if name in CALENDAR_METHODS:
        method, status = CALENDAR_METHODS[name]
        if organizer is None:
            from services.notifier.mail import configured_mail_from  # mail settings live with the transport

            organizer = configured_mail_from()
        calendar = booking_invitation(event, locale, method=method, status=status, attendee=recipient,
                                      attendee_name=recipient_name, organizer=organizer)
    return RenderedEmail(subject=subject, text=_tidy(text), html=html,
                         calendar=calendar, calendar_method=method, locale=locale)


def renewal_deadline(expires_on: dt.date) -> dt.date:
    """The last day to apply for re-examination of an assessment certificate expiring on ``expires_on``."""
    return expires_on - RENEWAL_APPLICATION_LEAD


def institute_zone() -> ZoneInfo:
    """The institute's time zone (``INSTITUTE_TZ``, default Asia/Shanghai): booking times are shown in it."""
    name = os.environ.get("INSTITUTE_TZ") or DEFAULT_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown INSTITUTE_TZ %r: showing times in %s", name, DEFAULT_ZONE)
        return ZoneInfo(DEFAULT_ZONE)


def localized_text(text: str | None, locale: str) -> str:
    """The part of a bilingual "中文。 English" text in ``locale``; the whole text when it is not bilingual.

    The scheduler's ``next_steps`` carry both languages in one string: Chinese first, then English.
    """
    if not text:
        return ""
    last = None
    for last in _CJK.finditer(text):  # noqa: B007 - the last match is what we want
        pass
    if last is not None:
        chinese, english = text[: last.end()].strip(), text[last.end():].strip()
        if len(english) >= 20 and english[0].isascii() and english[0].isalpha():
            return english if locale == "en" else chinese
    return text.strip()


# -- the invitation -------------------------------------------------------------------------------

def booking_invitation(event: dict, locale: str, *, method: CalendarMethod, status: str, attendee: str | None,
                       attendee_name: str | None, organizer: str) -> bytes:
    """An iTIP (RFC 5546) REQUEST or CANCEL for the booking of ``event``, times in UTC."""
    data = event["data"]
    booking = _booking(data, locale, institute_zone())
    strings = _environment().get_template(f"_strings.{locale}.j2").module
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method)
    vevent = Event()
    vevent.add("uid", f"{data['id']}@{UID_DOMAIN}")
    vevent.add("sequence", int(data.get("sequence") or 0))
    vevent.add("dtstamp", _instant(data.get("updated_at") or event.get("time")))
    vevent.add("dtstart", booking["starts_at"].astimezone(dt.UTC))
    vevent.add("dtend", booking["ends_at"].astimezone(dt.UTC))
    vevent.add("summary", str(strings.calendar_summary(booking)).strip())
    vevent.add("description", str(strings.calendar_description(booking)).strip())
    if booking["lab"]:
        vevent.add("location", booking["lab"])
    vevent.add("status", status)
    vevent.add("transp", "TRANSPARENT" if method == "CANCEL" else "OPAQUE")
    organizer_name, organizer_address = parseaddr(organizer)
    organizer_value = vCalAddress(f"mailto:{organizer_address or organizer}")
    if organizer_name:
        organizer_value.params["cn"] = vText(organizer_name)
    vevent.add("organizer", organizer_value)
    if attendee:
        attendee_value = vCalAddress(f"mailto:{attendee}")
        if attendee_name:
            attendee_value.params["cn"] = vText(attendee_name)
        attendee_value.params["role"] = vText("REQ-PARTICIPANT")
        if method == "REQUEST":
            attendee_value.params["partstat"] = vText("NEEDS-ACTION")
        # The organizer is a no-reply mailbox: calendar clients should not send replies to it.
        attendee_value.params["rsvp"] = vText("FALSE")
        vevent.add("attendee", attendee_value)
    calendar.add_component(vevent)
    return calendar.to_ical()


# -- context --------------------------------------------------------------------------------------

HTML_PREFIX = "html:"


class _TemplateLoader(FileSystemLoader):
    """``html:<name>`` is template ``<name>`` compiled for HTML.

    The wording macros (``_strings.*.j2``) serve the text and the HTML templates alike; a macro escapes
    what it interpolates only if it was compiled with autoescaping, so HTML templates import the
    ``html:`` compilation and text templates the plain one.
    """

    def get_source(self, environment, template):
        return super().get_source(environment, template.removeprefix(HTML_PREFIX))


def _autoescape(name: str | None) -> bool:
    return bool(name) and (name.startswith(HTML_PREFIX) or name.endswith(".html"))


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=_TemplateLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ymd"] = _ymd
    env.filters["hm"] = lambda value: value.strftime("%H:%M")
    return env


def _subject(name: str, locale: str, context: dict) -> str:
    try:
        template = _environment().get_template(f"{name}.{locale}.subject")
    except TemplateNotFound as exc:  # pragma: no cover - every supported type has one
        raise UnsupportedEvent(f"no subject template for {name} in {locale}") from exc
    # One line: a header never carries a line break.
    return " ".join(template.render(context).split())


def _tidy(text: str) -> str:
    """At most one blank line in a row, no trailing spaces, one final newline."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"


def _ymd(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        raise ValueError("no date to format")
    return value.strftime("%Y-%m-%d")


def _date(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _instant(value: Any) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without offset: {value!r}")
    return moment


def _display_name(party: dict | None, locale: str) -> str | None:
    if not party:
        return None
    if locale == "en" and party.get("name_en"):
        return party["name_en"]
    return party.get("name") or party.get("name_en")


def _context(name: str, event: dict, locale: str, *, recipient_name: str | None, role: str | None) -> dict:
    data = event["data"]
    context = {
        "event_type": event["type"],
        "event_id": event.get("id"),
        "locale": locale,
        "lang": "zh-CN" if locale == "zh-CN" else "en",
        "recipient_name": recipient_name.strip() if recipient_name and recipient_name.strip() else None,
        "role": role if role in ROLES else None,
    }
    if name in NOTICE_TYPES:
        context.update(_notice(name, data, locale))
    else:
        context["booking"] = _booking(data, locale, institute_zone())
    return context


def _notice(name: str, data: dict, locale: str) -> dict:
    as_of = _date(data.get("as_of"))
    items = []
    for raw in data["items"]:
        due_on = _date(raw.get("due_on"))
        item = {
            "item_kind": raw.get("item_kind") or "instrument",
            "name": raw["name"],
            "serial_number": raw.get("serial_number"),
            "category": raw.get("category"),
            "regulation": raw.get("regulation"),
            "mandatory": bool(raw.get("mandatory")),
            "standard_name": raw.get("standard_name"),
            "due_on": due_on,
            "days_left": int(raw["days_left"]) if raw.get("days_left") is not None else 0,
            "deadline": None,
            "deadline_days_left": None,
        }
        if item["item_kind"] == "assessment_certificate" and due_on is not None:
            item["deadline"] = renewal_deadline(due_on)
            item["deadline_days_left"] = item["days_left"] - RENEWAL_APPLICATION_LEAD.days
        items.append(item)
    if not items:
        raise ValueError("a notice without items")
    kinds = {item["item_kind"] for item in items}
    due_dates = [item["due_on"] for item in items if item["due_on"] is not None]
    recipient = data.get("recipient") or {}
    is_certificate = name == "certificate.renewal_due"
    return {
        # One notice may list overdue items and items not yet overdue (one per recipient and sweep): the
        # subject and intro speak of each part, so neither claims that every item is overdue.
        "overdue": _part([item for item in items if item["days_left"] < 0]),
        "upcoming": _part([item for item in items if item["days_left"] >= 0]),
        "notice": data.get("notice") or ("overdue" if name == "recalibration.overdue" else "due_soon"),
        "as_of": as_of,
        "items": items,
        "count": len(items),
        "kind": kinds.pop() if len(kinds) == 1 else "mixed",
        "is_certificate": is_certificate,
        "earliest_due_on": min(due_dates, default=None),
        "latest_due_on": max(due_dates, default=None),
        "organization": _display_name(recipient, locale) if recipient.get("kind") == "organization" else None,
        "recipient_kind": recipient.get("kind") or ("organization" if data.get("organization_id") else "custodian"),
        "next_steps": localized_text(data.get("next_steps"), locale),
        # Enterprises are told how to book the verification their instruments need.
        "booking_help": recipient.get("kind") == "organization" and any(
            item["item_kind"] == "instrument" for item in items),
    }


def _part(items: list[dict]) -> dict:
    """How many of a notice's items are in one state, the range of their due dates (None: no date) and
    the item due first (None: no date), whose renewal deadline a certificate notice names."""
    dated = [item for item in items if item["due_on"] is not None]
    first = min(dated, key=lambda item: item["due_on"], default=None)
    return {"count": len(items), "earliest_due_on": first["due_on"] if first else None,
            "latest_due_on": max((item["due_on"] for item in dated), default=None), "first": first}


def _booking(data: dict, locale: str, zone: ZoneInfo) -> dict:
    starts = _instant(data["starts_at"]).astimezone(zone)
    ends = _instant(data["ends_at"]).astimezone(zone)
    offset = starts.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    requester = data.get("requester") or {}
    return {
        "id": data["id"],
        "standard_name": data.get("standard_name") or data.get("standard_code") or data["standard_id"],
        "standard_code": data.get("standard_code"),
        "standard_id": data.get("standard_id"),
        "lab": data.get("lab"),
        "purpose": data.get("purpose"),
        "status": data["status"],
        "reason": data.get("reason"),
        "sequence": int(data.get("sequence") or 0),
        "starts_at": starts,
        "ends_at": ends,
        "same_day": starts.date() == ends.date(),
        "zone": getattr(zone, "key", str(zone)),
        "utc_offset": f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}",
        "requester": _display_name(requester, locale),
        "custodian_email": data.get("custodian_email"),
    }
