from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest

from shared.context import correlation_id
from shared.messaging.envelope import CONTENT_TYPE, InvalidMessage, decode, encode, make_event


def test_make_event_has_every_cloudevents_attribute():
    event = make_event("refstd.inventory.instrument.registered", "/services/inventory", "I-1", {"a": 1})
    assert set(event) == {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "correlationid",
        "data",
    }
    assert event["specversion"] == "1.0"
    assert uuid.UUID(event["id"]).version == 4
    assert event["source"] == "/services/inventory"
    assert event["type"] == "refstd.inventory.instrument.registered"
    assert event["subject"] == "I-1"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"a": 1}
    assert event["correlationid"] == event["id"]
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_time_is_rfc3339_utc_with_offset():
    shanghai = dt.timezone(dt.timedelta(hours=8))
    event = make_event("t.x", "/s", None, {}, time=dt.datetime(2025, 3, 1, 8, 30, tzinfo=shanghai))
    assert event["time"] == "2025-03-01T00:30:00+00:00"
    now = dt.datetime.fromisoformat(make_event("t.x", "/s", None, {})["time"])
    assert now.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - now) < dt.timedelta(seconds=5)
    with pytest.raises(ValueError):
        make_event("t.x", "/s", None, {}, time=dt.datetime(2025, 3, 1))


def test_correlation_id_explicit_then_context_then_own_id():
    assert make_event("t.x", "/s", None, {}, correlation_id="req-1")["correlationid"] == "req-1"
    token = correlation_id.set("req-2")
    try:
        assert make_event("t.x", "/s", None, {})["correlationid"] == "req-2"
        assert make_event("t.x", "/s", None, {}, correlation_id="req-3")["correlationid"] == "req-3"
    finally:
        correlation_id.reset(token)
    event = make_event("t.x", "/s", None, {}, id="fixed-id")
    assert event["id"] == "fixed-id" and event["correlationid"] == "fixed-id"


def test_encode_decode_round_trip_and_json_types():
    data = {"due": dt.date(2025, 1, 31), "value": decimal.Decimal("1.50"), "ref": uuid.UUID(int=1), "text": "量"}
    event = make_event("t.x", "/s", "subj", data)
    body = encode(event)
    assert isinstance(body, bytes)
    decoded = decode(body)
    assert decoded["data"] == {"due": "2025-01-31", "value": "1.50", "ref": str(uuid.UUID(int=1)), "text": "量"}
    assert {k: v for k, v in decoded.items() if k != "data"} == {k: v for k, v in event.items() if k != "data"}
    with pytest.raises(TypeError):
        encode(make_event("t.x", "/s", None, {"at": dt.datetime(2025, 1, 1)}))
    with pytest.raises(TypeError):
        encode(make_event("t.x", "/s", None, {"thing": object()}))


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe\x00", b"{", b"[1]", b"42", b'"text"', b"null"])
def test_decode_rejects_non_json_and_non_objects(body):
    with pytest.raises(InvalidMessage):
        decode(body)


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type", "data"])
def test_decode_rejects_a_missing_required_attribute(missing):
    event = make_event("t.x", "/s", None, {"a": 1})
    del event[missing]
    with pytest.raises(InvalidMessage) as info:
        decode(json.dumps(event).encode())
    assert missing in info.value.errors


@pytest.mark.parametrize(
    "change",
    [
        {"specversion": "0.3"},
        {"id": ""},
        {"type": 7},
        {"data": [1, 2]},
        {"data": "text"},
        {"time": "yesterday"},
        {"time": "2025-01-01T00:00:00"},  # no offset
        {"datacontenttype": "text/plain"},
    ],
)
def test_decode_rejects_invalid_attributes(change):
    event = {**make_event("t.x", "/s", None, {}), **change}
    with pytest.raises(InvalidMessage):
        decode(json.dumps(event).encode())


def test_decode_accepts_extensions_and_absent_optional_attributes():
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t.x", "data": {}, "traceparent": "00-ab"}
    assert decode(json.dumps(event)) == event
