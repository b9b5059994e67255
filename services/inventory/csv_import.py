"""Reading an enterprise's instruments from a CSV file, reporting every problem at once.

Plain functions, no Flask and no database: the import endpoint writes `ParsedImport.rows` only when
`ParsedImport.errors` is empty (all or nothing). Row numbers are spreadsheet row numbers: the header is
row 1 and the first data row is row 2, counting blank rows, so a user finds each error where Excel shows it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates

REQUIRED_COLUMNS = ("name", "category", "serial_number", "interval_months")
OPTIONAL_COLUMNS = ("manufacturer", "model", "regulation", "mandatory", "last_verified_on", "location")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
INTERVAL_MONTHS_MIN = 1
INTERVAL_MONTHS_MAX = 120
# Bounds what one request can make the service hold; a centre's yearly workload is ~1,100 instruments.
MAX_ROWS = 10_000
MAX_COLUMNS = 100

_FILE = "file"
_UNNAMED = ""
_TEXT_MAX_LENGTH = {
    "name": 200,
    "category": 100,
    "serial_number": 100,
    "manufacturer": 200,
    "model": 100,
    "regulation": 100,
    "location": 200,
}


@dataclass
class ParsedImport:
    """Valid rows (typed) and every problem found, each `{"row", "field", "message"}`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    # The spreadsheet row number of each entry of `rows`, in the same order.
    row_numbers: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- Per-row validation ---------------------------------------------------------------------------


def _single_line_text(value: str) -> None:
    # Control characters (line breaks, tabs, NUL) have no place in these fields, and PostgreSQL text
    # cannot store NUL at all.
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("must not contain control characters such as line breaks or tabs")


def _text(name: str, *, required: bool) -> fields.String:
    checks = [
        validate.Length(max=_TEXT_MAX_LENGTH[name], error="must be at most {max} characters"),
        _single_line_text,
    ]
    if required:
        return fields.String(required=True, validate=checks, error_messages={"required": "is required"})
    return fields.String(allow_none=True, validate=checks)


class StrictBoolean(fields.Field):
    """Exactly `true` or `false`, in any letter case; "yes", "1" and the like are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValidationError("must be true or false")


class WholeNumber(fields.Field):
    """A whole number written with the digits 0-9 only (no '12.0', '1e2' or '1_0')."""

    _PATTERN = re.compile(r"[+-]?[0-9]{1,9}")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and self._PATTERN.fullmatch(value.strip()):
            return int(value.strip())
        raise ValidationError("must be a whole number")


class CalendarDate(fields.Field):
    """A date written YYYY-MM-DD."""

    _PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str) and self._PATTERN.fullmatch(value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                raise ValidationError(f"{value.strip()} is not a real calendar date") from None
        raise ValidationError("must be a date written YYYY-MM-DD, e.g. 2024-03-31")


class InstrumentRowSchema(Schema):
    """One instrument as a CSV row: raw cell strings in, typed values out.

    A blank cell of an optional column loads as None, except `mandatory`, where blank means false.
    A column absent from the file is absent from the result, so an update can leave that field alone.
    `last_verified_on` may not be after `today`.
    """

    class Meta:
        unknown = RAISE

    name = _text("name", required=True)
    category = _text("category", required=True)
    serial_number = _text("serial_number", required=True)
    interval_months = WholeNumber(
        required=True,
        validate=validate.Range(
            min=INTERVAL_MONTHS_MIN, max=INTERVAL_MONTHS_MAX, error="must be between {min} and {max} months"
        ),
        error_messages={"required": "is required"},
    )
    manufacturer = _text("manufacturer", required=False)
    model = _text("model", required=False)
    regulation = _text("regulation", required=False)
    mandatory = StrictBoolean()
    last_verified_on = CalendarDate(allow_none=True)
    location = _text("location", required=False)

    def __init__(self, *, today: dt.date, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.today = today

    @pre_load
    def _blank_cells(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        cleaned = {}
        for key, value in data.items():
            if isinstance(value, str):
                value = value.strip()
                if value == "":
                    if key in REQUIRED_COLUMNS:
                        continue  # reported as "is required"
                    value = "false" if key == "mandatory" else None
            cleaned[key] = value
        return cleaned

    @validates("last_verified_on")
    def _not_in_the_future(self, value: dt.date | None, **kwargs: Any) -> None:
        if value is not None and value > self.today:
            raise ValidationError(
                f"is in the future ({value.isoformat()} is after today, {self.today.isoformat()})"
            )


# --- The file -------------------------------------------------------------------------------------


def parse_instruments_csv(data: bytes, today: dt.date, *, max_rows: int = MAX_ROWS) -> ParsedImport:
    """Read and validate an instruments CSV (UTF-8, with or without BOM, header row first).

    Never raises for any input: everything wrong is in `errors`, ordered by row. `today` is the
    institute's date, against which `last_verified_on` may not be in the future.
    """
    result = ParsedImport()
    text = _decode(data, result)
    if text is None:
        return result
    records = _records(text)
    try:
        header_row, header = _first_non_blank(records)
        if header_row is None:
            _error(result, 1, _FILE, "the file is empty; it needs a header row and at least one data row")
            return result
        columns, rows_checkable = _read_header(header, header_row, result)
        if columns is None:
            return result
        schema = InstrumentRowSchema(today=today)
        seen: dict[tuple[str, str], int] = {}
        data_rows = 0
        for row_number, cells in records:
            if _is_blank(cells):
                continue
            data_rows += 1
            if data_rows > max_rows:
                _error(result, row_number, _FILE, f"too many rows: at most {max_rows} instruments per file")
                return _without_rows(result)
            if rows_checkable:
                _read_row(schema, columns, cells, row_number, seen, result)
    except _Unreadable as exc:
        _error(result, exc.row, _FILE, f"not readable as CSV: {exc.reason}")
        return _without_rows(result)

    if data_rows == 0:
        _error(result, header_row + 1, _FILE, "the file has a header row but no instruments below it")
    result.errors.sort(key=lambda error: error["row"])
    return result


class _Unreadable(Exception):
    def __init__(self, row: int, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(spreadsheet row number, cells) for every record, blank ones included so numbers stay true."""
    reader = csv.reader(io.StringIO(text, newline=""))
    row_number = 0
    while True:
        row_number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            raise _Unreadable(row_number, str(exc)) from None
        yield row_number, cells


def _without_rows(result: ParsedImport) -> ParsedImport:
    result.rows.clear()
    result.row_numbers.clear()
    result.errors.sort(key=lambda error: error["row"])
    return result


def _decode(data: bytes, result: ParsedImport) -> str | None:
    if not isinstance(data, bytes | bytearray | memoryview):
        _error(result, 1, _FILE, "the upload is not a file")
        return None
    data = bytes(data)
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        _error(result, 1, _FILE, "this is an Excel workbook, not CSV; in Excel use Save As > 'CSV UTF-8'")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        _error(
            result,
            line,
            _FILE,
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}); "
            "in Excel use Save As > 'CSV UTF-8'",
        )
        return None


def _is_blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _first_non_blank(records: Iterator[tuple[int, list[str]]]) -> tuple[int | None, list[str]]:
    for row_number, cells in records:
        if not _is_blank(cells):
            return row_number, cells
    return None, []


def _read_header(header: list[str], row: int, result: ParsedImport) -> tuple[list[str | None] | None, bool]:
    """Column names by position and whether rows can be checked.

    A position holds the column's name, `_UNNAMED` ("") when its header cell is blank, or None when
    the column is unknown or repeated (reported once here; its values are ignored).

    Unknown columns are reported but the rows are still checked; a missing required column or a
    column named twice makes row-by-row checking meaningless, so only the header is reported then.
    Columns None: the header is beyond use (absurdly wide), nothing else is read.
    """
    if len(header) > MAX_COLUMNS:
        _error(result, row, _FILE, f"the header has {len(header)} columns; at most {MAX_COLUMNS} are read")
        return None, False
    columns: list[str | None] = []
    first_position: dict[str, int] = {}
    checkable = True
    for position, raw in enumerate(header, start=1):
        name = raw.strip().lstrip("\ufeff").strip()
        key = name.lower()
        if not name:
            columns.append(_UNNAMED)
            continue
        if key not in COLUMNS:
            _error(result, row, name, f"unknown column {name!r}; the columns are: {', '.join(COLUMNS)}")
            columns.append(None)
            continue
        if key in first_position:
            _error(
                result,
                row,
                key,
                f"column {key!r} appears twice (columns {first_position[key]} and {position})",
            )
            checkable = False
            columns.append(None)
            continue
        first_position[key] = position
        columns.append(key)
    for required in REQUIRED_COLUMNS:
        if required not in first_position:
            _error(result, row, required, f"required column {required!r} is missing")
            checkable = False
    return columns, checkable


def _read_row(
    schema: InstrumentRowSchema,
    columns: list[str | None],
    cells: list[str],
    row_number: int,
    seen: dict[tuple[str, str], int],
    result: ParsedImport,
) -> None:
    raw: dict[str, str] = {name: "" for name in columns if name}
    errors_before = len(result.errors)
    stray = None  # first value in a column the header does not name
    for position, cell in enumerate(cells, start=1):
        name = columns[position - 1] if position <= len(columns) else _UNNAMED
        if name:
            raw[name] = cell
        elif name == _UNNAMED and stray is None and cell.strip():
            stray = position
    if stray is not None:
        _error(result, row_number, _FILE, f"column {stray} has a value but no name in the header row")
    try:
        row = schema.load(raw)
    except ValidationError as exc:
        for field_name, messages in _flatten(exc.messages):
            for message in messages:
                _error(result, row_number, field_name, message)
        row = None
        loaded = exc.valid_data if isinstance(exc.valid_data, dict) else {}
    else:
        loaded = row
    key = (loaded.get("serial_number"), loaded.get("category"))
    if key[0] is not None and key[1] is not None:
        if key in seen:
            _error(
                result,
                row_number,
                "serial_number",
                f"serial_number {key[0]!r} with category {key[1]!r} already appears on row {seen[key]}",
            )
        else:
            seen[key] = row_number
    if row is not None and len(result.errors) == errors_before:
        result.rows.append(row)
        result.row_numbers.append(row_number)


def _flatten(messages: Any) -> list[tuple[str, list[str]]]:
    if isinstance(messages, dict):
        return [
            (str(name), [str(m) for m in (value if isinstance(value, list) else [value])])
            for name, value in messages.items()
        ]
    return [(_FILE, [str(m) for m in (messages if isinstance(messages, list) else [messages])])]


def _error(result: ParsedImport, row: int, field_name: str, message: str) -> None:
    result.errors.append({"row": row, "field": field_name, "message": message})
