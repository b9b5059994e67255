"""The notice rules with fixed dates: lead-time crossing, overdue repeats, catch-up, never calibrated,
due states, and the grouping of noticed items into one recalibration event per recipient (and one
certificate event per custodian)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from services.scheduler.domain import notices as rules
from services.scheduler.schemas import DEFAULT_POLICY, NoticeSchema
from shared.messaging.envelope import encode
from shared.timeutil import today_in

AS_OF = dt.date(2026, 3, 2)
INSTRUMENT_LEADS = [30, 7, 0]


def day(offset: int) -> dt.date:
    return AS_OF + dt.timedelta(days=offset)


def instrument_lead(days: int) -> str | None:
    return rules.lead_for(days, INSTRUMENT_LEADS, overdue_repeat_days=7, overdue_max_notices=4)


def daily_sweeps(due_on: dt.date | None, first: dt.date, last: dt.date, kind: str = "instrument",
                 policy: dict = DEFAULT_POLICY, noticed: set | None = None) -> list[tuple[dt.date, str]]:
    """What a sweep on every day from first to last emits for one item: (date, lead) of each new key."""
    noticed = set() if noticed is None else noticed
    emitted = []
    current = first
    while current <= last:
        lead = rules.notice_lead(kind, due_on, current, policy)
        if lead is not None:
            key = rules.notice_key(kind, "item-1", due_on, lead)
            if key not in noticed:
                noticed.add(key)
                emitted.append((current, lead))
        current += dt.timedelta(days=1)
    return emitted


# -- days left and due states --------------------------------------------------------------------

def test_days_left_counts_calendar_days_to_the_due_date():
    assert rules.days_left(day(5), AS_OF) == 5
    assert rules.days_left(AS_OF, AS_OF) == 0
    assert rules.days_left(day(-3), AS_OF) == -3


def test_an_item_never_calibrated_has_zero_days_left_on_any_day():
    assert rules.days_left(None, AS_OF) == 0
    assert rules.days_left(None, day(400)) == 0


@pytest.mark.parametrize(("days", "state"), [
    (-1, "overdue"), (-400, "overdue"), (0, "due"), (1, "due_soon"), (30, "due_soon"), (31, "ok"),
])
def test_due_state_of_an_instrument_at_each_boundary(days, state):
    assert rules.due_state(days, INSTRUMENT_LEADS) == state


def test_due_soon_reaches_as_far_as_the_largest_lead_of_the_kind():
    assert rules.due_state(60, rules.lead_days(DEFAULT_POLICY, "equipment")) == "due_soon"
    assert rules.due_state(61, rules.lead_days(DEFAULT_POLICY, "equipment")) == "ok"
    assert rules.due_state(270, rules.lead_days(DEFAULT_POLICY, "assessment_certificate")) == "due_soon"
    assert rules.due_state(271, rules.lead_days(DEFAULT_POLICY, "assessment_certificate")) == "ok"


def test_a_never_calibrated_item_is_due():
    assert rules.due_state(rules.days_left(None, AS_OF), INSTRUMENT_LEADS) == "due"


# -- lead-time windows ---------------------------------------------------------------------------

@pytest.mark.parametrize(("days", "lead"), [
    (31, None), (30, "30"), (8, "30"), (7, "7"), (1, "7"), (0, "0"),
    (-1, "overdue:0"), (-7, "overdue:0"), (-8, "overdue:1"), (-14, "overdue:1"), (-15, "overdue:2"),
    (-21, "overdue:2"), (-22, "overdue:3"), (-28, "overdue:3"), (-29, None), (-1000, None),
])
def test_instrument_window_at_every_boundary(days, lead):
    assert instrument_lead(days) == lead


@pytest.mark.parametrize(("kind", "days", "lead"), [
    ("equipment", 61, None), ("equipment", 60, "60"), ("equipment", 31, "60"), ("equipment", 30, "30"),
    ("equipment", 8, "30"), ("equipment", 7, "7"), ("equipment", 1, "7"), ("equipment", 0, "0"),
    ("equipment", -1, "overdue:0"),
    ("assessment_certificate", 271, None), ("assessment_certificate", 270, "270"),
    ("assessment_certificate", 211, "270"), ("assessment_certificate", 210, "210"),
    ("assessment_certificate", 181, "210"), ("assessment_certificate", 180, "180"),
    ("assessment_certificate", 0, "180"), ("assessment_certificate", -1, "overdue:0"),
    ("assessment_certificate", -28, "overdue:3"), ("assessment_certificate", -29, None),
])
def test_equipment_and_certificate_windows_use_their_own_leads(kind, days, lead):
    assert rules.notice_lead(kind, day(days), AS_OF, DEFAULT_POLICY) == lead


def test_lead_order_in_the_policy_does_not_matter():
    assert rules.lead_for(5, [0, 30, 7], 7, 4) == rules.lead_for(5, [30, 7, 0], 7, 4) == "7"


@pytest.mark.parametrize(("leads", "repeat", "max_notices"), [
    ([30, 7, 0], 7, 4), ([60, 30, 7, 0], 7, 4), ([270, 210, 180], 7, 4), ([5], 1, 0), ([0], 3, 2),
    ([14, 1], 10, 1), ([100, 0], 30, 12),
])
def test_the_sweep_windows_give_the_same_lead_as_the_rule_for_every_day(leads, repeat, max_notices):
    windows = rules.notice_windows(leads, repeat, max_notices, AS_OF)
    for offset in range(-400, 400):
        due_on = day(offset)
        matching = [w.lead for w in windows if w.first_due_on <= due_on <= w.last_due_on]
        expected = rules.lead_for(offset, leads, repeat, max_notices)
        assert matching == ([expected] if expected is not None else []), offset
    assert [w.lead for w in windows if w.includes_never_calibrated] == [str(min(leads))]


def test_an_item_registered_inside_a_small_window_gets_only_the_smallest_lead():
    # Registered 5 days before its due date: the 30-day notice it has passed is never sent late.
    emitted = daily_sweeps(day(5), AS_OF, day(5))
    assert emitted == [(AS_OF, "7"), (day(5), "0")]


def test_an_item_followed_from_afar_gets_every_lead_once_then_capped_overdue_repeats():
    due_on = day(40)
    emitted = daily_sweeps(due_on, AS_OF, due_on + dt.timedelta(days=100))
    assert emitted == [
        (due_on - dt.timedelta(days=30), "30"), (due_on - dt.timedelta(days=7), "7"), (due_on, "0"),
        (due_on + dt.timedelta(days=1), "overdue:0"), (due_on + dt.timedelta(days=8), "overdue:1"),
        (due_on + dt.timedelta(days=15), "overdue:2"), (due_on + dt.timedelta(days=22), "overdue:3"),
    ]


def test_no_overdue_notice_when_the_policy_allows_none():
    policy = {**DEFAULT_POLICY, "overdue_max_notices": 0}
    emitted = daily_sweeps(day(-1), AS_OF, day(60), policy=policy)
    assert emitted == []


def test_catch_up_after_ten_days_of_downtime_emits_only_the_current_window():
    due_on = day(40)
    noticed: set = set()
    before = daily_sweeps(due_on, AS_OF, due_on - dt.timedelta(days=8), noticed=noticed)
    assert [lead for _, lead in before] == ["30"]
    # Down from due-7 to due+2 (10 days): the 7-day, 0-day notices are missed; the restart sees overdue:0.
    restart = due_on + dt.timedelta(days=3)
    after = daily_sweeps(due_on, restart, restart, noticed=noticed)
    assert after == [(restart, "overdue:0")]


def test_a_new_due_date_gives_new_keys():
    first = rules.notice_key("instrument", "i-1", day(7), "7")
    recalibrated = rules.notice_key("instrument", "i-1", day(190), "7")
    assert first != recalibrated


def test_a_never_calibrated_item_is_noticed_once_at_the_smallest_lead():
    assert rules.notice_lead("equipment", None, AS_OF, DEFAULT_POLICY) == "0"
    assert rules.notice_key("equipment", "e-1", None, "0") == ("equipment", "e-1",
                                                               rules.NEVER_CALIBRATED_KEY_DATE, "0")
    emitted = daily_sweeps(None, AS_OF, day(120), kind="equipment")
    assert emitted == [(AS_OF, "0")]


def test_event_type_of_each_kind_and_lead():
    assert rules.event_type("instrument", "7") == "recalibration.due_soon"
    assert rules.event_type("equipment", "0") == "recalibration.due_soon"
    assert rules.event_type("instrument", "overdue:2") == "recalibration.overdue"
    assert rules.event_type("assessment_certificate", "270") == "certificate.renewal_due"
    assert rules.event_type("assessment_certificate", "overdue:0") == "certificate.renewal_due"


# -- calendar dates, not instants ----------------------------------------------------------------

def test_the_sweep_date_near_midnight_is_the_calendar_date_in_shanghai():
    before_midnight = dt.datetime(2026, 3, 31, 15, 59, 59, tzinfo=dt.UTC)  # 23:59:59 in Shanghai
    after_midnight = dt.datetime(2026, 3, 31, 16, 0, 0, tzinfo=dt.UTC)  # 00:00:00 on 1 April
    assert today_in("Asia/Shanghai", before_midnight) == dt.date(2026, 3, 31)
    assert today_in("Asia/Shanghai", after_midnight) == dt.date(2026, 4, 1)
    due_on = dt.date(2026, 4, 1)
    assert rules.lead_for(rules.days_left(due_on, today_in("Asia/Shanghai", before_midnight)),
                          INSTRUMENT_LEADS, 7, 4) == "7"
    assert rules.lead_for(rules.days_left(due_on, today_in("Asia/Shanghai", after_midnight)),
                          INSTRUMENT_LEADS, 7, 4) == "0"


def test_days_left_ignores_daylight_saving_changes():
    # 29 March 2026 has 23 hours in Berlin; a due date two calendar days away is still 2 days away.
    start = dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC)
    as_of = today_in("Europe/Berlin", start)
    assert rules.days_left(dt.date(2026, 3, 30), as_of) == 2
    assert rules.days_left(dt.date(2026, 3, 30), today_in("Asia/Shanghai", start)) == 2


# -- grouping ------------------------------------------------------------------------------------

ORG_A, ORG_B, ORG_UNKNOWN = "org-a", "org-b", "org-unknown"
ORGANIZATIONS = {
    ORG_A: {"name": "淄博示例氢源新材料有限公司", "name_en": "Hydrogen (sample)",
            "contacts": [{"name": "王工", "email": "wang@example.com", "locale": "zh-CN", "extra": "x"}]},
    ORG_B: {"name": "示例膜科技有限公司", "name_en": None, "contacts": []},
}
STANDARDS = {"std-1": "气体流量标准装置"}


def item(kind: str, item_id: str, due_offset: int | None, lead: str, **fields) -> dict:
    base = {"item_kind": kind, "item_id": item_id, "name": f"name {item_id}",
            "serial_number": f"SN-{item_id}",
            "category": None, "regulation": None, "mandatory": False, "standard_id": None,
            "organization_id": None, "custodian_name": None, "custodian_email": None,
            "due_on": None if due_offset is None else day(due_offset), "lead": lead}
    return {**base, **fields}


def instrument(item_id: str, organization_id: str, due_offset: int) -> dict:
    return item("instrument", item_id, due_offset, instrument_lead(due_offset),
                organization_id=organization_id, category="pressure gauge", regulation="JJG 52-2013",
                mandatory=True)


def equipment(item_id: str, due_offset: int | None, lead: str, email: str | None = "li@example.com") -> dict:
    return item("equipment", item_id, due_offset, lead, standard_id="std-1", custodian_name="李工",
                custodian_email=email)


def group(items: list[dict]) -> list[rules.Notice]:
    return rules.group_notices(items, as_of=AS_OF, organizations=ORGANIZATIONS, standard_names=STANDARDS)


def by_type_and_subject(notices: list[rules.Notice]) -> dict:
    return {(n.type, n.subject): n for n in notices}


def test_one_notice_per_organization_listing_all_its_items_most_urgent_first():
    notices = group([instrument("a1", ORG_A, 25), instrument("a2", ORG_A, 3), instrument("a3", ORG_A, -2),
                     instrument("a4", ORG_A, 0), instrument("b1", ORG_B, 7)])
    found = by_type_and_subject(notices)
    assert set(found) == {("recalibration.overdue", ORG_A), ("recalibration.due_soon", ORG_B)}
    a = found["recalibration.overdue", ORG_A].data
    assert a["notice"] == "overdue"  # one item overdue: the others, due today and soon, travel with it
    assert [(i["item_id"], i["days_left"], i["lead"], i["due_on"]) for i in a["items"]] == [
        ("a3", -2, "overdue:0", day(-2)), ("a4", 0, "0", day(0)), ("a2", 3, "7", day(3)),
        ("a1", 25, "30", day(25))]
    assert a["earliest_due_on"] == day(-2)
    assert a["organization_id"] == ORG_A
    assert a["recipient"] == {
        "kind": "organization", "organization_id": ORG_A, "name": ORGANIZATIONS[ORG_A]["name"],
        "name_en": "Hydrogen (sample)",
        "contacts": [{"name": "王工", "email": "wang@example.com", "locale": "zh-CN"}]}
    assert rules.INSTITUTE_NAME in a["next_steps"]
    b = found["recalibration.due_soon", ORG_B].data
    assert (b["notice"], [(i["item_id"], i["lead"]) for i in b["items"]]) == ("due_soon", [("b1", "7")])


def test_a_notice_is_overdue_only_when_an_item_in_it_is():
    assert [n.type for n in group([instrument("a1", ORG_A, 7), instrument("a2", ORG_A, 0)])] == \
           ["recalibration.due_soon"]
    assert [n.type for n in group([instrument("a1", ORG_A, -1)])] == ["recalibration.overdue"]
    assert rules.notice_type([instrument("a1", ORG_A, 30), instrument("a2", ORG_A, -22)]) == \
           "recalibration.overdue"


def test_three_hundred_instruments_due_together_make_one_notice():
    notices = group([instrument(f"i{n}", ORG_A, 7) for n in range(300)])
    assert len(notices) == 1
    assert len(notices[0].data["items"]) == 300


def test_equipment_and_certificates_go_to_the_custodian_grouped_by_email_whatever_its_case():
    notices = group([
        equipment("e1", 20, "30"), equipment("e2", 5, "7", email="LI@Example.com "),
        equipment("e3", -3, "overdue:0"),
        item("assessment_certificate", "std-1", 200, "210", standard_id="std-1", custodian_name="李工",
             custodian_email="li@example.com"),
    ])
    found = by_type_and_subject(notices)
    # A certificate is a notice of its own (the legal deadline to apply for re-examination).
    assert set(found) == {("recalibration.overdue", "li@example.com"),
                          ("certificate.renewal_due", "li@example.com")}
    equipment_notice = found["recalibration.overdue", "li@example.com"].data
    assert [(i["item_id"], i["lead"]) for i in equipment_notice["items"]] == \
           [("e3", "overdue:0"), ("e2", "7"), ("e1", "30")]
    assert equipment_notice["recipient"] == {"kind": "custodian", "organization_id": None, "name": "李工",
                                             "name_en": None,
                                             "contacts": [{"name": "李工", "email": "li@example.com"}]}
    assert equipment_notice["organization_id"] is None
    assert equipment_notice["items"][0]["standard_name"] == "气体流量标准装置"
    assert "calibrated" in equipment_notice["next_steps"]
    renewal = found["certificate.renewal_due", "li@example.com"].data
    assert renewal["notice"] == "renewal_due"
    assert [i["item_id"] for i in renewal["items"]] == ["std-1"]
    assert "180 days" in renewal["next_steps"]


def test_a_certificate_notice_with_an_overdue_certificate_says_overdue():
    notices = group([
        item("assessment_certificate", "s1", 200, "210", custodian_email="li@example.com"),
        item("assessment_certificate", "s2", -1, "overdue:0", custodian_email="li@example.com"),
    ])
    assert len(notices) == 1
    assert notices[0].type == "certificate.renewal_due"
    assert notices[0].data["notice"] == "overdue"
    assert [i["item_id"] for i in notices[0].data["items"]] == ["s2", "s1"]


def test_items_without_a_known_recipient_still_go_out_with_no_contacts():
    notices = group([instrument("u1", ORG_UNKNOWN, 7), equipment("e1", 7, "7", email=None)])
    found = by_type_and_subject(notices)
    assert found["recalibration.due_soon", ORG_UNKNOWN].data["recipient"] == {
        "kind": "organization", "organization_id": ORG_UNKNOWN, "name": None, "name_en": None, "contacts": []}
    no_custodian = found["recalibration.due_soon", None].data
    assert no_custodian["recipient"]["kind"] == "custodian"
    assert no_custodian["recipient"]["contacts"] == []


def test_a_never_calibrated_item_is_listed_first_with_no_due_date():
    notices = group([equipment("e1", 3, "7"), equipment("e0", None, "0")])
    items = notices[0].data["items"]
    assert [(i["item_id"], i["due_on"], i["days_left"]) for i in items] == \
           [("e0", None, 0), ("e1", day(3), 3)]
    assert notices[0].data["earliest_due_on"] == day(3)


def test_the_payload_is_exactly_what_the_notice_schema_dumps():
    notices = group([instrument("a1", ORG_A, 7), instrument("u1", ORG_UNKNOWN, -1),
                     equipment("e0", None, "0"),
                     item("assessment_certificate", "s1", 200, "210", custodian_email="li@example.com")])
    assert len(notices) == 4
    for notice in notices:
        as_encoded = json.loads(encode(notice.data))
        assert as_encoded == NoticeSchema().dump(notice.data)
