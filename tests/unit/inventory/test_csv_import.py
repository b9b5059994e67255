import datetime as dt
import random

import pytest

from services.inventory.csv_import import InstrumentRowSchema, parse_instruments_csv

TODAY = dt.date(2025, 6, 15)
HEADER = "name,category,serial_number,interval_months,mandatory,last_verified_on,regulation"


def csv_bytes(*lines: str, bom: bool = False, newline: str = "\n") -> bytes:
    text = newline.join(lines) + newline
    return ("\ufeff" + text if bom else text).encode("utf-8")


def errors_of(data: bytes, **kwargs) -> list[tuple[int, str]]:
    return [(error["row"], error["field"]) for error in parse_instruments_csv(data, TODAY, **kwargs).errors]


def test_a_valid_file_gives_typed_rows():
    parsed = parse_instruments_csv(
        csv_bytes(
            HEADER,
            "一般压力表,pressure_gauge,P-001,6,true,2025-01-31,JJG 52-2013",
            "Digital scale,scale,S-7,12,FALSE,,",
        ),
        TODAY,
    )
    assert parsed.errors == []
    assert parsed.ok
    assert parsed.rows == [
        {
            "name": "一般压力表",
            "category": "pressure_gauge",
            "serial_number": "P-001",
            "interval_months": 6,
            "mandatory": True,
            "last_verified_on": dt.date(2025, 1, 31),
            "regulation": "JJG 52-2013",
        },
        {
            "name": "Digital scale",
            "category": "scale",
            "serial_number": "S-7",
            "interval_months": 12,
            "mandatory": False,
            "last_verified_on": None,
            "regulation": None,
        },
    ]
    assert parsed.row_numbers == [2, 3]


def test_a_file_with_a_byte_order_mark_reads_like_one_without():
    lines = ("name,category,serial_number,interval_months", "Gauge,pressure_gauge,P-1,6")
    with_bom = parse_instruments_csv(csv_bytes(*lines, bom=True), TODAY)
    without_bom = parse_instruments_csv(csv_bytes(*lines), TODAY)
    assert with_bom.errors == []
    assert (
        with_bom.rows
        == without_bom.rows
        == [{"name": "Gauge", "category": "pressure_gauge", "serial_number": "P-1", "interval_months": 6}]
    )


def test_windows_line_endings_are_read():
    parsed = parse_instruments_csv(
        csv_bytes("name,category,serial_number,interval_months", "Gauge,pg,P-1,6", newline="\r\n"), TODAY
    )
    assert parsed.errors == []
    assert parsed.rows[0]["interval_months"] == 6


def test_columns_absent_from_the_file_are_absent_from_the_rows():
    parsed = parse_instruments_csv(
        csv_bytes("name,category,serial_number,interval_months", "G,pg,P-1,6"), TODAY
    )
    assert "mandatory" not in parsed.rows[0]
    assert "last_verified_on" not in parsed.rows[0]


def test_column_names_are_matched_ignoring_case_and_spaces():
    parsed = parse_instruments_csv(
        csv_bytes(" Name ,CATEGORY,serial_number,Interval_Months", "G,pg,P-1,6"), TODAY
    )
    assert parsed.errors == []
    assert parsed.rows[0]["name"] == "G"


def test_errors_carry_spreadsheet_row_numbers_counting_blank_rows():
    data = csv_bytes(
        "name,category,serial_number,interval_months",
        "G,pg,P-1,6",
        "",
        "G,pg,P-2,0",
        ",,,",
        "G,pg,P-3,abc",
    )
    assert errors_of(data) == [(4, "interval_months"), (6, "interval_months")]


def test_a_cell_spanning_lines_is_one_spreadsheet_row():
    data = csv_bytes(
        "name,category,serial_number,interval_months",
        '"two',
        'lines",pg,P-1,6',
        "G,pg,P-2,0",
    )
    parsed = parse_instruments_csv(data, TODAY)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [(2, "name"), (3, "interval_months")]
    assert "control characters" in parsed.errors[0]["message"]


def test_every_bad_field_of_every_bad_row_is_reported():
    data = csv_bytes(
        HEADER,
        ",pg,,200,yes,2025-02-30,",
        "G,,P-2,0,1,31/01/2025,",
        "G,pg,P-3,6,true,2025-01-01,",
    )
    parsed = parse_instruments_csv(data, TODAY)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [
        (2, "name"),
        (2, "serial_number"),
        (2, "interval_months"),
        (2, "mandatory"),
        (2, "last_verified_on"),
        (3, "category"),
        (3, "interval_months"),
        (3, "mandatory"),
        (3, "last_verified_on"),
    ]
    messages = {(e["row"], e["field"]): e["message"] for e in parsed.errors}
    assert messages[(2, "name")] == "is required"
    assert messages[(2, "interval_months")] == "must be between 1 and 120 months"
    assert messages[(2, "mandatory")] == "must be true or false"
    assert messages[(2, "last_verified_on")] == "2025-02-30 is not a real calendar date"
    assert messages[(3, "last_verified_on")] == "must be a date written YYYY-MM-DD, e.g. 2024-03-31"
    assert [row["serial_number"] for row in parsed.rows] == ["P-3"]
    assert parsed.row_numbers == [4]


@pytest.mark.parametrize(
    ("cell", "expected"), [("true", True), ("TRUE", True), ("False", False), ("", False)]
)
def test_mandatory_is_true_or_false_in_any_case_and_blank_means_false(cell, expected):
    parsed = parse_instruments_csv(
        csv_bytes("name,category,serial_number,interval_months,mandatory", f"G,pg,P,6,{cell}"), TODAY
    )
    assert parsed.errors == []
    assert parsed.rows[0]["mandatory"] is expected


@pytest.mark.parametrize("cell", ["yes", "1", "t", "真", "true false"])
def test_mandatory_spelled_any_other_way_is_refused(cell):
    data = csv_bytes("name,category,serial_number,interval_months,mandatory", f"G,pg,P,6,{cell}")
    assert errors_of(data) == [(2, "mandatory")]


@pytest.mark.parametrize(
    ("cell", "ok"),
    [
        ("1", True),
        ("120", True),
        ("0", False),
        ("121", False),
        ("-6", False),
        ("6.0", False),
        ("1e1", False),
        ("1_2", False),
        ("", False),
    ],
)
def test_the_interval_is_a_whole_number_of_months_from_1_to_120(cell, ok):
    data = csv_bytes("name,category,serial_number,interval_months", f"G,pg,P,{cell}")
    assert errors_of(data) == ([] if ok else [(2, "interval_months")])


def test_a_verification_date_in_the_future_is_refused_and_today_is_accepted():
    data = csv_bytes(
        "name,category,serial_number,interval_months,last_verified_on",
        f"G,pg,P-1,6,{TODAY.isoformat()}",
        f"G,pg,P-2,6,{(TODAY + dt.timedelta(days=1)).isoformat()}",
    )
    parsed = parse_instruments_csv(data, TODAY)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [(3, "last_verified_on")]
    assert "future" in parsed.errors[0]["message"]
    assert parsed.rows[0]["last_verified_on"] == TODAY


def test_a_repeated_serial_number_and_category_is_reported_on_the_later_row_naming_the_earlier():
    data = csv_bytes(
        "name,category,serial_number,interval_months",
        "G,pg,P-1,6",
        "G,scale,P-1,6",
        "G,pg,P-2,6",
        "Other name,pg,P-1,12",
    )
    parsed = parse_instruments_csv(data, TODAY)
    assert parsed.errors == [
        {
            "row": 5,
            "field": "serial_number",
            "message": "serial_number 'P-1' with category 'pg' already appears on row 2",
        }
    ]


def test_a_duplicate_is_reported_even_when_its_row_has_other_errors():
    data = csv_bytes("name,category,serial_number,interval_months", "G,pg,P-1,6", ",pg,P-1,6")
    assert errors_of(data) == [(3, "name"), (3, "serial_number")]


def test_an_unknown_column_is_named_on_row_1_and_the_rows_are_still_checked():
    data = csv_bytes("name,category,serial_number,interval_months,colour", "G,pg,P-1,0,red")
    parsed = parse_instruments_csv(data, TODAY)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [(1, "colour"), (2, "interval_months")]
    assert "unknown column 'colour'" in parsed.errors[0]["message"]


def test_a_missing_required_column_is_reported_once_not_on_every_row():
    data = csv_bytes("name,category,interval_months", "G,pg,6", "H,pg,6")
    assert errors_of(data) == [(1, "serial_number")]


def test_a_column_named_twice_is_reported():
    data = csv_bytes("name,category,serial_number,interval_months,name", "G,pg,P,6,H")
    parsed = parse_instruments_csv(data, TODAY)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [(1, "name")]
    assert "columns 1 and 5" in parsed.errors[0]["message"]


def test_a_value_outside_the_named_columns_is_reported():
    data = csv_bytes("name,category,serial_number,interval_months,", "G,pg,P,6,", "G,pg,Q,6,,stray")
    assert errors_of(data) == [(3, "file")]


def test_a_file_that_is_not_utf8_is_one_file_error():
    data = "name,category,serial_number,interval_months\n压力表,pg,P,6\n".encode("gbk")
    parsed = parse_instruments_csv(data, TODAY)
    assert len(parsed.errors) == 1
    assert parsed.errors[0]["field"] == "file"
    assert parsed.errors[0]["row"] == 2
    assert "not UTF-8" in parsed.errors[0]["message"]
    assert parsed.rows == []


def test_an_excel_workbook_is_recognised():
    parsed = parse_instruments_csv(b"PK\x03\x04\x14\x00\x06\x00", TODAY)
    assert errors_of(b"PK\x03\x04\x14\x00\x06\x00") == [(1, "file")]
    assert "Excel workbook" in parsed.errors[0]["message"]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n", b" , ,\r\n"])
def test_an_empty_file_is_refused(data):
    parsed = parse_instruments_csv(data, TODAY)
    assert parsed.errors == [
        {
            "row": 1,
            "field": "file",
            "message": "the file is empty; it needs a header row and at least one data row",
        }
    ]


def test_a_header_without_rows_is_refused():
    assert errors_of(csv_bytes("name,category,serial_number,interval_months", "")) == [(2, "file")]


def test_too_many_rows_stop_the_import():
    lines = ["name,category,serial_number,interval_months"] + [f"G,pg,P-{i},6" for i in range(5)]
    parsed = parse_instruments_csv(csv_bytes(*lines), TODAY, max_rows=3)
    assert parsed.errors == [
        {"row": 5, "field": "file", "message": "too many rows: at most 3 instruments per file"}
    ]
    assert parsed.rows == []


def test_a_huge_cell_is_a_file_error_not_a_crash():
    data = b'name,category,serial_number,interval_months\n"' + b"x" * 200_000 + b'",pg,P,6\n'
    assert errors_of(data) == [(2, "file")]


def test_overlong_text_is_refused():
    data = csv_bytes("name,category,serial_number,interval_months", f"{'x' * 201},pg,P,6")
    parsed = parse_instruments_csv(data, TODAY)
    assert parsed.errors == [{"row": 2, "field": "name", "message": "must be at most 200 characters"}]


def test_arbitrary_bytes_never_raise():
    generator = random.Random(20250615)
    alphabet = b'ab,\n\r"\xef\xbb\xbf\x00\xff truefalse0123456789-'
    header = b"name,category,serial_number,interval_months,mandatory,last_verified_on\n"
    for _ in range(300):
        body = bytes(generator.choice(alphabet) for _ in range(generator.randint(0, 200)))
        for data in (body, header + body):
            parsed = parse_instruments_csv(data, TODAY)
            assert parsed.errors or parsed.rows
            assert all(isinstance(error["row"], int) and error["row"] >= 1 for error in parsed.errors)


def test_the_row_schema_can_be_reused_for_a_single_row():
    schema = InstrumentRowSchema(today=TODAY)
    row = schema.load({"name": " G ", "category": "pg", "serial_number": "P", "interval_months": "6"})
    assert row == {"name": "G", "category": "pg", "serial_number": "P", "interval_months": 6}
