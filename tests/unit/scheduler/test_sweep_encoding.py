"""The sweep's prebuilt encoder writes exactly what the envelope's encoder writes, and its pause of the
garbage collector leaves the collector as it found it."""

from __future__ import annotations

import datetime as dt
import decimal
import gc

import pytest

from services.scheduler import events, sweep
from services.scheduler.domain import notices as rules
from shared.messaging.envelope import encode, make_event

AS_OF = dt.date(2026, 3, 2)


def item(kind: str, item_id: str, due_on: dt.date | None, lead: str, **fields) -> dict:
    base = {"item_kind": kind, "item_id": item_id, "name": f'名称 "{item_id}"\\\t', "serial_number": None,
            "category": None, "regulation": "JJG 52-2013", "mandatory": 1, "standard_id": "std-1",
            "organization_id": None, "custodian_name": "李工", "custodian_email": "li@example.com",
            "due_on": due_on, "lead": lead}
    return {**base, **fields}


def test_notice_events_are_encoded_exactly_as_the_envelope_encodes_them():
    notices = rules.group_notices(
        [item("instrument", "i1", AS_OF, "0", organization_id="org-a", standard_id=None),
         item("instrument", "i2", AS_OF - dt.timedelta(days=3), "overdue:0", organization_id="org-a"),
         item("equipment", "e1", None, "0"), item("assessment_certificate", "s1", AS_OF, "180")],
        as_of=AS_OF, standard_names={"std-1": "气体流量标准装置"},
        organizations={"org-a": {"name": "示例企业", "name_en": None,
                                 "contacts": [{"name": "王工", "email": "w@example.com", "locale": "zh-CN"}]}})

    assert len(notices) == 3  # org-a's instruments in one; the custodian's equipment; the certificate
    for notice in notices:
        event = make_event(events.PREFIX + notice.type, events.SOURCE, notice.subject, notice.data)
        assert sweep._body(event) == encode(event).decode()


def test_values_other_than_dates_are_left_to_the_envelope_encoder():
    event = make_event("refstd.scheduler.test", events.SOURCE, None, {
        "on": AS_OF, "at": dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        "amount": decimal.Decimal("1.50")})

    assert sweep._body(event) == encode(event).decode()
    with pytest.raises(TypeError):
        sweep._body({**event, "data": {"at": dt.datetime(2026, 3, 2, 8, 0)}})  # naive: refused, as by encode


def test_the_collector_pause_lasts_until_the_last_holder_leaves_and_restores_the_collector():
    pause = sweep._CollectorPause()
    assert gc.isenabled()

    pause.__enter__()
    pause.__enter__()  # a second, concurrent sweep
    pause.__exit__(None, None, None)
    assert not gc.isenabled()
    pause.__exit__(None, None, None)
    assert gc.isenabled()

    gc.disable()  # switched off by someone else: stays off
    try:
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
