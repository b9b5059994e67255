"""The base of the services' marshmallow schemas, and text checks every input needs.

Any string a client sends may hold characters no database can store: NUL (PostgreSQL text refuses it)
and lone surrogates (JSON allows ``"\\ud800"``; UTF-8 cannot encode it). Input schemas derived from
``Schema`` refuse both as a 422 naming the field, instead of a 500 at the INSERT.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

import marshmallow as ma

NUL_CHARACTER = "must not contain NUL characters"
LONE_SURROGATE = "must be valid Unicode text (it contains an unpaired surrogate)"


def text_problem(text: str) -> str | None:
    """Why no database can store ``text`` (a NUL character, a lone surrogate), or None."""
    if "\x00" in text:
        return NUL_CHARACTER
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return LONE_SURROGATE
    return None


def unstorable_text(data: Any, path: str = "") -> dict[str, list[str]]:
    """Every string in ``data`` (mappings and lists are walked, keys too) that ``text_problem`` refuses.

    Keyed by the dotted path of the value (``contacts.0.name``); ``_schema`` for ``data`` itself.
    Walked without recursion, so deeply nested input cannot exhaust the stack.
    """
    errors: dict[str, list[str]] = {}
    pending: list[tuple[str, Any]] = [(path, data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                errors[where or "_schema"] = [problem]
        elif isinstance(value, Mapping):
            for key, item in value.items():
                pending.append((f"{where}.{key}" if where else str(key), item))
                if isinstance(key, str):
                    pending.append((f"{where}.{key}" if where else str(key), key))
        elif isinstance(value, list | tuple):
            pending.extend((f"{where}.{index}" if where else str(index), item)
                           for index, item in enumerate(value))
    return errors


class Schema(ma.Schema):
    """Base input/output schema: strings that no database can store are refused, naming the field.

    The check runs on what the fields loaded, alongside the other validators, so a request learns every
    bad field at once. A field that failed its own validation is named already and not checked again;
    values loaded by a nested schema derived from this one are checked by that schema.
    """

    # Fields whose text is neither stored nor given to the database as sent (e.g. an id filter that the
    # view parses first, where an odd value simply matches nothing): they are not checked.
    UNSTORED_TEXT_FIELDS: tuple[str, ...] = ()

    @ma.validates_schema(skip_on_field_errors=False)
    def _refuse_unstorable_text(self, data: Mapping[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name, value in data.items():
            field = self.fields.get(name)
            if name in self.UNSTORED_TEXT_FIELDS or (field is not None and _checks_itself(field)):
                continue
            errors.update(unstorable_text(value, (field.data_key if field is not None else None) or name))
        if errors:
            raise ma.ValidationError(errors)


def _checks_itself(field: ma.fields.Field) -> bool:
    """Whether the field's values are loaded by a nested ``Schema``, which checks its own text."""
    while isinstance(field, ma.fields.List):
        field = field.inner
    return isinstance(field, ma.fields.Nested) and isinstance(field.schema, Schema)


class NoControlCharacters(ma.validate.Validator):
    """Refuses control characters (category Cc: line breaks, tabs, NUL...) other than those in ``allow``."""

    def __init__(self, allow: str = "", error: str | None = None) -> None:
        self.allow = allow
        self.error = error or "must not contain control characters"

    def __call__(self, value: str) -> str:
        if any(unicodedata.category(char) == "Cc" and char not in self.allow for char in value):
            raise ma.ValidationError(self.error)
        return value


class JsonBoolean(ma.fields.Boolean):
    """A boolean in a JSON body: ``true`` or ``false`` only. ``fields.Boolean`` also takes 1, "yes", "on"
    and the like, which suits query strings (all text) but lets a client's type error through in JSON."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value

