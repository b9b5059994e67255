"""Notice rules: days left, due states, lead-time crossing, overdue repeats, notice keys, and the grouping
of noticed items into one recalibration event per recipient and sweep, plus one certificate event per
custodian (domain.md, rules 2-4; contract.md, "Scheduler").

Dates only: every argument is a calendar date in the institute's zone (``shared.timeutil.today_in``
turns an instant into one), so time zones and daylight saving play no part here.

Lead-time crossing, with a kind's leads sorted ascending ``l0 < l1 < ... < ln``:

- ``0 <= days_left <= ln``: the item is in the window of the *smallest* lead ``>= days_left``; only that
  lead is noticed. Larger leads it has already passed are not sent late (an item registered 5 days
  before its due date gets the 7-day notice only).
- ``days_left < 0``: overdue reminder ``n = (-days_left - 1) // overdue_repeat_days`` (the day after the
  due date is ``overdue:0``, a repeat later ``overdue:1``, ...), none once ``n >= overdue_max_notices``.
- otherwise nothing is due yet.

A sweep after downtime therefore notices only the *current* window of each item, never the missed ones.
Each key ``(item_kind, item_id, due_on, lead)`` is noticed once, ever; a new due date gives new keys.

Never calibrated (``due_on`` None): due now, i.e. ``days_left`` 0 whenever it is looked at, which is the
window of the smallest lead. Its key uses :data:`NEVER_CALIBRATED_KEY_DATE` as the due date, so it is
noticed once (not every day) until a calibration gives it a real due date; it gets no overdue repeats,
as there is no date to count them from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ITEM_KINDS = ("equipment", "assessment_certificate", "instrument")
DUE_STATES = ("ok", "due_soon", "due", "overdue")

#: The policy setting that holds each kind's lead days.
LEAD_SETTING = {
    "instrument": "instrument_lead_days",
    "equipment": "equipment_lead_days",
    "assessment_certificate": "certificate_lead_days",
}

#: The due date recorded in the notice key of an item that was never calibrated (it has none).
NEVER_CALIBRATED_KEY_DATE = dt.date(1, 1, 1)

OVERDUE_PREFIX = "overdue:"

# Event types (without the service prefix).
RECALIBRATION_DUE_SOON = "recalibration.due_soon"
RECALIBRATION_OVERDUE = "recalibration.overdue"
CERTIFICATE_RENEWAL_DUE = "certificate.renewal_due"
NOTICE_EVENT_TYPES = (RECALIBRATION_DUE_SOON, RECALIBRATION_OVERDUE, CERTIFICATE_RENEWAL_DUE)

INSTITUTE_NAME = "淄博市检验检测计量研究总院计量院（示例）"
INSTITUTE_NAME_EN = "Zibo Institute of Inspection, Testing and Metrology (sample)"

# Short on purpose: one copy goes out in every notice; the notifier writes the full, localised message.
NEXT_STEPS = {
    "instrument": (
        f"请在到期前向{INSTITUTE_NAME}预约检定（服务窗口或 refstd 预约接口）；强制检定器具逾期不得使用。"
        f" Book the verification with {INSTITUTE_NAME_EN} before the due date; an overdue instrument under "
        "mandatory verification may not be used."
    ),
    "equipment": (
        "请送上级计量技术机构校准并在 refstd 登记；设备逾期则计量标准不可使用。"
        " Have the equipment calibrated by a higher-level institute and record it in refstd; overdue "
        "equipment makes its standard unusable."
    ),
    "assessment_certificate": (
        "请在证书到期前至少 6 个月申请复查考核；证书过期则计量标准不可使用。"
        " Apply for re-examination at least 6 months (180 days) before the certificate expires; an expired "
        "certificate makes the standard unusable."
    ),
}

_CONTACT_FIELDS = ("name", "email", "phone", "locale")


# -- due dates -----------------------------------------------------------------------------------

def days_left(due_on: dt.date | None, as_of: dt.date) -> int:
    """Calendar days from ``as_of`` to ``due_on`` (negative when overdue); never calibrated: 0 (due now)."""
    return 0 if due_on is None else (due_on - as_of).days


def lead_days(policy: Mapping[str, Any], item_kind: str) -> list[int]:
    """The kind's notice lead days, ascending."""
    return sorted(set(policy[LEAD_SETTING[item_kind]]))


def due_state(days: int, leads: Iterable[int]) -> str:
    """ok | due_soon | due | overdue for an item ``days`` days from its due date.

    due_soon: within the kind's largest lead (e.g. 30 days for instruments), excluding the due date itself.
    """
    if days < 0:
        return "overdue"
    if days == 0:
        return "due"
    if days <= max(leads, default=0):
        return "due_soon"
    return "ok"


# -- lead-time crossing --------------------------------------------------------------------------

def overdue_lead(n: int) -> str:
    return f"{OVERDUE_PREFIX}{n}"


def is_overdue_lead(lead: str) -> bool:
    return lead.startswith(OVERDUE_PREFIX)


def lead_for(days: int, leads: Iterable[int], overdue_repeat_days: int,
             overdue_max_notices: int) -> str | None:
    """The lead whose window an item ``days`` days from its due date is in, or None (nothing to notice)."""
    ascending = sorted(set(leads))
    if days >= 0:
        for lead in ascending:
            if days <= lead:
                return str(lead)
        return None
    n = (-days - 1) // overdue_repeat_days
    return overdue_lead(n) if n < overdue_max_notices else None


def notice_lead(item_kind: str, due_on: dt.date | None, as_of: dt.date,
                policy: Mapping[str, Any]) -> str | None:
    """The lead an item is noticed at on ``as_of`` under ``policy`` (None: nothing to notice)."""
    return lead_for(days_left(due_on, as_of), lead_days(policy, item_kind),
                    policy["overdue_repeat_days"], policy["overdue_max_notices"])


def key_due_on(due_on: dt.date | None) -> dt.date:
    """The due date as recorded in a notice key (never calibrated has a fixed stand-in)."""
    return NEVER_CALIBRATED_KEY_DATE if due_on is None else due_on


def notice_key(item_kind: str, item_id: str, due_on: dt.date | None,
               lead: str) -> tuple[str, str, dt.date, str]:
    """The idempotency key of one notice: each is noticed once, ever."""
    return item_kind, item_id, key_due_on(due_on), lead


@dataclass(frozen=True)
class Window:
    """Items whose due date is in ``[first_due_on, last_due_on]`` (and, if flagged, the never calibrated)
    are noticed at ``lead`` on the sweep date. The windows of one kind are disjoint."""

    lead: str
    first_due_on: dt.date
    last_due_on: dt.date
    includes_never_calibrated: bool = False


def _shift(day: dt.date, days: int) -> dt.date:
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.max if days > 0 else dt.date.min


def notice_windows(leads: Iterable[int], overdue_repeat_days: int, overdue_max_notices: int,
                   as_of: dt.date) -> list[Window]:
    """The due-date ranges of every lead and overdue window on ``as_of`` (what a set-based sweep selects).

    Lead ``l_i`` covers ``days_left`` in ``[l_{i-1} + 1, l_i]`` with ``l_{-1} = -1``; overdue reminder n
    covers ``days_left`` in ``[-(n + 1) * repeat, -n * repeat - 1]``. Same answers as :func:`lead_for`.
    """
    windows = []
    previous = -1
    for index, lead in enumerate(sorted(set(leads))):
        windows.append(Window(str(lead), _shift(as_of, previous + 1), _shift(as_of, lead),
                              includes_never_calibrated=index == 0))
        previous = lead
    for n in range(overdue_max_notices):
        windows.append(Window(overdue_lead(n), _shift(as_of, -(n + 1) * overdue_repeat_days),
                              _shift(as_of, -n * overdue_repeat_days - 1)))
    return windows


def kind_windows(policy: Mapping[str, Any], item_kind: str, as_of: dt.date) -> list[Window]:
    return notice_windows(lead_days(policy, item_kind), policy["overdue_repeat_days"],
                          policy["overdue_max_notices"], as_of)


def event_type(item_kind: str, lead: str) -> str:
    """The event an item noticed at ``lead`` calls for on its own (without the service prefix); a
    recipient's items go out together, in the event :func:`notice_type` names."""
    if item_kind == "assessment_certificate":
        return CERTIFICATE_RENEWAL_DUE
    return RECALIBRATION_OVERDUE if is_overdue_lead(lead) else RECALIBRATION_DUE_SOON


# -- grouping into events ------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    """One event to publish: ``type`` (without prefix), ``subject`` and ``data`` (a NoticeSchema payload)."""

    type: str
    subject: str | None
    data: dict


def _recipient_key(item: Mapping[str, Any]) -> tuple[str, str | None]:
    """Instruments go to their organization; equipment and certificates to the standard's custodian."""
    if item["item_kind"] == "instrument":
        return "organization", item["organization_id"]
    email = item["custodian_email"]
    return "custodian", (email.strip().lower() or None) if email else None


def _contacts(contacts: Iterable[Mapping[str, Any]] | None) -> list[dict]:
    return [{key: contact[key] for key in _CONTACT_FIELDS if key in contact}
            for contact in contacts or () if isinstance(contact, Mapping)]


def _recipient(kind: str, key: str | None, items: list[Mapping[str, Any]],
               organizations: Mapping[str, Mapping[str, Any]]) -> dict:
    if kind == "organization":
        organization = organizations.get(key) if key is not None else None
        if organization is None:  # not (yet) known to the read model: the notifier routes by organization_id
            return {"kind": kind, "organization_id": key, "name": None, "name_en": None, "contacts": []}
        return {"kind": kind, "organization_id": key, "name": organization.get("name"),
                "name_en": organization.get("name_en"), "contacts": _contacts(organization.get("contacts"))}
    name = next((item["custodian_name"] for item in items if item["custodian_name"]), None)
    email = next((item["custodian_email"].strip() for item in items if item["custodian_email"]), None)
    contacts = [{"name": name, "email": email}] if email else []
    return {"kind": kind, "organization_id": None, "name": name, "name_en": None, "contacts": contacts}


def _notice_item(item: Mapping[str, Any], as_of: dt.date, standard_names: Mapping[str, str]) -> dict:
    standard_id = item["standard_id"]
    due_on = item["due_on"]
    return {
        "item_kind": item["item_kind"],
        "item_id": item["item_id"],
        "name": item["name"],
        "serial_number": item["serial_number"],
        "category": item["category"],
        "regulation": item["regulation"],
        "mandatory": bool(item["mandatory"]),
        "standard_id": standard_id,
        "standard_name": standard_names.get(standard_id) if standard_id else None,
        "due_on": due_on,
        "days_left": 0 if due_on is None else (due_on - as_of).days,  # days_left(), inlined: runs per item
        "lead": item["lead"],
    }


def _urgency(item: dict) -> tuple:
    return item["days_left"], item["due_on"] or NEVER_CALIBRATED_KEY_DATE, item["name"], item["item_id"]


def notice_type(items: Iterable[Mapping[str, Any]]) -> str:
    """The event one recipient's items of one kind of notice go out in (without the service prefix).

    Certificates: ``certificate.renewal_due``. Recalibration (instruments, equipment): one event for all
    of them, ``recalibration.overdue`` as soon as one item in it is overdue, else
    ``recalibration.due_soon``; each item keeps its own lead and days left.
    """
    types = {event_type(item["item_kind"], item["lead"]) for item in items}
    if CERTIFICATE_RENEWAL_DUE in types:
        return CERTIFICATE_RENEWAL_DUE
    return RECALIBRATION_OVERDUE if RECALIBRATION_OVERDUE in types else RECALIBRATION_DUE_SOON


def group_notices(items: Iterable[Mapping[str, Any]], *, as_of: dt.date,
                  organizations: Mapping[str, Mapping[str, Any]],
                  standard_names: Mapping[str, str]) -> list[Notice]:
    """One recalibration notice per recipient, listing every item noticed (most urgent first), and for a
    custodian one certificate notice besides.

    One per recipient, not per lead or state, because domain.md rule 4 wants one email per enterprise
    per sweep: its overdue items and those due soon travel together (:func:`notice_type` names the
    event). Certificates are a notice of their own, with the legal deadline to apply for re-examination,
    so a custodian may get a recalibration notice and a certificate notice in the same sweep.

    ``items``: mappings with every field of a tracked item (item_kind, item_id, name, serial_number,
    category, regulation, mandatory, standard_id, organization_id, custodian_name, custodian_email, due_on;
    None where unknown) and the ``lead`` it is noticed at. ``organizations``: id -> {name, name_en,
    contacts}; ``standard_names``: id -> name. Items without a known recipient still go out, with no
    contacts (the notifier keeps its own organization read model and a default route), so a legal deadline
    is never held back. The payload has exactly the shape NoticeSchema dumps (dates as ``date`` objects).
    """
    groups: dict[tuple[bool, tuple[str, str | None]], list[Mapping[str, Any]]] = {}
    for item in items:
        key = (item["item_kind"] == "assessment_certificate", _recipient_key(item))
        groups.setdefault(key, []).append(item)

    notices = []
    for (is_certificate, (recipient_kind, key)), members in groups.items():
        type_ = notice_type(members)
        listed = [_notice_item(item, as_of, standard_names) for item in members]
        listed.sort(key=_urgency)
        due_dates = [item["due_on"] for item in listed if item["due_on"] is not None]
        if is_certificate:
            notice = "overdue" if any(is_overdue_lead(item["lead"]) for item in listed) else "renewal_due"
            steps = NEXT_STEPS["assessment_certificate"]
        else:
            notice = "overdue" if type_ == RECALIBRATION_OVERDUE else "due_soon"
            steps = NEXT_STEPS["instrument" if recipient_kind == "organization" else "equipment"]
        notices.append(Notice(type_, key, {
            "notice": notice,
            "as_of": as_of,
            "recipient": _recipient(recipient_kind, key, members, organizations),
            "organization_id": key if recipient_kind == "organization" else None,
            "items": listed,
            "earliest_due_on": min(due_dates, default=None),
            "next_steps": steps,
        }))
    notices.sort(key=lambda n: (n.type, n.data["recipient"]["kind"], n.subject or ""))
    return notices
