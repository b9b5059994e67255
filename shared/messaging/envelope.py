"""The event envelope: CloudEvents 1.0 in structured JSON mode (architecture.md, rule 2).

An event is a plain dict with the CloudEvents attributes at the top level and the payload under
``data``. ``encode`` gives the AMQP body; ``decode`` parses and validates what a consumer received
and raises :class:`InvalidMessage` for anything that is not a valid envelope (a poison message).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates

from shared.context import correlation_id as _correlation_id
from shared.timeutil import utcnow

SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"


class InvalidMessage(ValueError):
    """A message body that is not JSON or not a valid CloudEvents envelope."""

    def __init__(self, message: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with an explicit offset (``2025-01-31T08:00:00.123456+00:00``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("event time must be timezone-aware")
    return value.astimezone(dt.UTC).isoformat()


def make_event(
    type: str,
    source: str,
    subject: str | None,
    data: dict,
    *,
    correlation_id: str | None = None,
    id: str | None = None,
    time: dt.datetime | None = None,
) -> dict:
    """Build a CloudEvents 1.0 event dict.

    ``correlationid`` is the given value, else the current :data:`shared.context.correlation_id`
    (the HTTP request or the event being handled), else the event's own id.
    """
    if not type:
        raise ValueError("event type is required")
    if not source:
        raise ValueError("event source is required")
    if not isinstance(data, Mapping):
        raise TypeError("event data must be a dict")
    event_id = str(id) if id is not None else str(uuid.uuid4())
    return {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": type,
        "time": format_time(time if time is not None else utcnow()),
        "subject": subject,
        "datacontenttype": DATA_CONTENT_TYPE,
        "correlationid": correlation_id or _correlation_id.get() or event_id,
        "data": dict(data),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError(f"naive datetime {value.isoformat()} in event data: instants need an offset")
        return format_time(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an event")


def encode(event: Mapping[str, Any]) -> bytes:
    """The AMQP body of an event: compact UTF-8 JSON.

    Dates become ISO 8601 strings, aware datetimes RFC 3339 UTC (naive ones are refused),
    ``Decimal`` and ``UUID`` strings.
    """
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()


class CloudEventSchema(Schema):
    """Validates an inbound envelope. Extension attributes are allowed (CloudEvents 1.0)."""

    class Meta:
        unknown = INCLUDE

    specversion = fields.String(required=True, validate=validate.Equal(SPECVERSION))
    id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    source = fields.String(required=True, validate=validate.Length(min=1))
    type = fields.String(required=True, validate=validate.Length(min=1, max=255))
    time = fields.AwareDateTime(format="iso", load_default=None, allow_none=True)
    subject = fields.String(load_default=None, allow_none=True)
    datacontenttype = fields.String(load_default=None, allow_none=True)
    correlationid = fields.String(load_default=None, allow_none=True)
    data = fields.Dict(required=True)

    @validates("datacontenttype")
    def _json_data(self, value: str | None, **_kwargs: Any) -> None:
        if value is not None and value.split(";")[0].strip() != DATA_CONTENT_TYPE:
            raise ValidationError(f"datacontenttype must be {DATA_CONTENT_TYPE}")


_SCHEMA = CloudEventSchema()


def decode(body: bytes | str) -> dict:
    """Parse and validate a message body; returns the event dict exactly as sent.

    :raises InvalidMessage: the body is not UTF-8 JSON, not an object, or not a valid envelope.
    """
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"message body is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise InvalidMessage(f"message body is a JSON {type(event).__name__}, not an object")
    errors = _SCHEMA.validate(event)
    if errors:
        raise InvalidMessage(f"invalid CloudEvents envelope: {errors}", errors)
    return event
