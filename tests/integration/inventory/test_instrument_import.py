"""Importing an enterprise's instruments from a CSV file: all or nothing, spreadsheet row numbers."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from sqlalchemy import func, select

from services.inventory.models import Instrument
from shared.timeutil import add_months, institute_today

IMPORT = "/api/v1/instruments/import"
HEADER = "name,category,serial_number,interval_months,mandatory,regulation,last_verified_on,location"


def csv_bytes(*lines: str, bom: bool = False) -> bytes:
    text = "\r\n".join(lines) + "\r\n"
    return ("\ufeff" if bom else "").encode() + text.encode("utf-8")


@pytest.fixture
def upload(client, admin):
    """``upload(org_id, content, headers=admin)`` -> the response of the import."""

    def post(organization_id: str | None, content: bytes | None, headers: dict | None = None,
             part: str = "file"):
        url = IMPORT if organization_id is None else f"{IMPORT}?organization_id={organization_id}"
        data = {} if content is None else {part: (io.BytesIO(content), "仪器清单.csv")}
        return client.post(url, data=data, content_type="multipart/form-data", headers=headers or admin)

    return post


@pytest.fixture
def instruments(inventory_db):
    def read(organization_id: str | None = None) -> dict[str, Instrument]:
        with inventory_db.Session() as session:
            query = select(Instrument)
            if organization_id:
                query = query.where(Instrument.organization_id == organization_id)
            return {i.serial_number: i for i in session.scalars(query)}

    return read


@pytest.fixture
def count_instruments(inventory_db):
    def count() -> int:
        with inventory_db.Session() as session:
            return session.scalar(select(func.count()).select_from(Instrument))

    return count


def assert_problem(response, status: int, *fields: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    for field in fields:
        assert field in response.json["errors"], response.json
    return response.json


def verified(days_ago: int) -> str:
    return (institute_today() - dt.timedelta(days=days_ago)).isoformat()


def test_a_utf8_file_with_bom_and_chinese_names_registers_every_instrument(upload, orgs, instruments, outbox):
    content = csv_bytes(
        HEADER,
        f"一般压力表,压力表,YB-001,6,true,JJG 52-2013,{verified(30)},氢能车间",
        "数字指示秤,衡器,CZ-001,12,false,JJG 539-2016,,仓库",
        bom=True,
    )
    response = upload(orgs["a"], content)
    assert response.status_code == 200, response.json
    assert response.json == {"created": 2, "updated": 0}
    stored = instruments(orgs["a"])
    assert stored["YB-001"].name == "一般压力表"
    assert stored["YB-001"].mandatory is True
    assert stored["YB-001"].due_on == add_months(dt.date.fromisoformat(verified(30)), 6)
    assert stored["CZ-001"].last_verified_on is None
    assert stored["CZ-001"].due_on == institute_today()  # never verified: due on registration
    assert stored["CZ-001"].location == "仓库"
    events = outbox("instrument.registered")
    assert sorted(e["data"]["serial_number"] for e in events) == ["CZ-001", "YB-001"]
    assert all(e["data"]["organization_id"] == orgs["a"] for e in events)
    assert {e["data"]["name"] for e in events} == {"一般压力表", "数字指示秤"}


def test_a_file_without_bom_and_with_only_the_required_columns_is_read(upload, orgs, instruments):
    content = csv_bytes("serial_number,name,category,interval_months", "G-1,可燃气体检测报警器,气体检测,12")
    response = upload(orgs["b"], content)
    assert response.json == {"created": 1, "updated": 0}
    assert instruments(orgs["b"])["G-1"].mandatory is False


def test_a_second_import_updates_existing_instruments_and_registers_new_ones(upload, orgs, instruments,
                                                                             outbox):
    upload(orgs["a"], csv_bytes(HEADER, "压力表甲,压力表,P-1,6,true,,,车间",
                                "压力表乙,压力表,P-2,6,true,,,车间"))
    before = instruments(orgs["a"])
    response = upload(orgs["a"], csv_bytes(
        HEADER,
        "压力表甲,压力表,P-1,6,true,,,车间",  # unchanged
        "压力表乙(新),压力表,P-2,6,true,,,库房",  # renamed and moved
        "压力表丙,压力表,P-3,6,false,,,车间",  # new
    ))
    assert response.status_code == 200
    assert response.json == {"created": 1, "updated": 2}
    after = instruments(orgs["a"])
    assert after["P-2"].id == before["P-2"].id
    assert after["P-2"].name == "压力表乙(新)"
    assert after["P-2"].location == "库房"
    assert after["P-1"].version == before["P-1"].version
    [updated] = outbox("instrument.updated")
    assert updated["subject"] == before["P-2"].id
    assert updated["data"]["name"] == "压力表乙(新)"
    assert len(outbox("instrument.registered")) == 3


def test_a_new_interval_in_a_reimport_moves_the_due_date(upload, orgs, instruments):
    last = verified(20)
    upload(orgs["a"], csv_bytes(HEADER, f"压力表,压力表,P-1,6,true,,{last},"))
    upload(orgs["a"], csv_bytes("name,category,serial_number,interval_months", "压力表,压力表,P-1,3"))
    stored = instruments(orgs["a"])["P-1"]
    assert stored.interval_months == 3
    assert stored.due_on == add_months(dt.date.fromisoformat(last), 3)
    assert stored.mandatory is True  # a column absent from the file is left alone


def test_the_same_serial_number_in_another_organization_is_another_instrument(upload, orgs, instruments):
    upload(orgs["a"], csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,"))
    response = upload(orgs["b"], csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,"))
    assert response.json == {"created": 1, "updated": 0}
    assert instruments(orgs["a"])["P-1"].id != instruments(orgs["b"])["P-1"].id


def test_one_bad_row_among_good_ones_rejects_the_file_naming_spreadsheet_rows(upload, orgs, outbox,
                                                                              count_instruments):
    content = csv_bytes(
        HEADER,                                   # row 1
        "压力表甲,压力表,P-1,6,true,,,",             # row 2: fine
        "压力表乙,压力表,P-2,zero,yes,,,",           # row 3: interval_months and mandatory
        "",                                       # row 4: blank, still counted
        "压力表丙,压力表,P-3,6,false,,2024-02-30,",  # row 5: last_verified_on
        "压力表丁,压力表,P-4,6,false,,,",             # row 6: fine
        bom=True,
    )
    response = upload(orgs["a"], content)
    body = assert_problem(response, 422, "row 3.interval_months", "row 3.mandatory", "row 5.last_verified_on")
    assert body["code"] == "invalid_file"
    assert sorted((r["row"], r["field"]) for r in body["rows"]) == [
        (3, "interval_months"), (3, "mandatory"), (5, "last_verified_on")]
    assert all(r["message"] for r in body["rows"])
    assert count_instruments() == 0
    assert outbox() == []


def test_a_row_naming_a_removed_instrument_is_refused(client, admin, upload, orgs, instruments,
                                                      count_instruments):
    upload(orgs["a"], csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,"))
    client.delete(f"/api/v1/instruments/{instruments(orgs['a'])['P-1'].id}", headers=admin)
    content = csv_bytes(HEADER, "新表,压力表,P-9,6,true,,,", "压力表,压力表,P-1,12,true,,,")
    response = upload(orgs["a"], content)
    body = assert_problem(response, 422, "row 3.serial_number")
    assert [r["row"] for r in body["rows"]] == [3]
    assert count_instruments() == 1
    assert instruments(orgs["a"])["P-1"].interval_months == 6


@pytest.mark.parametrize("content", [
    "名称,类别\n压力表,压力表\n".encode("gbk"),
    HEADER.encode() + b"\n\xff\xfe,x,y,6,,,,\n",
])
def test_a_file_that_is_not_utf8_is_422_and_nothing_is_written(upload, orgs, content, count_instruments,
                                                               outbox):
    body = assert_problem(upload(orgs["a"], content), 422)
    assert body["rows"][0]["field"] == "file"
    assert "UTF-8" in body["rows"][0]["message"]
    assert any(key.endswith(".file") for key in body["errors"])
    assert count_instruments() == 0
    assert outbox() == []


@pytest.mark.parametrize("content", [b"", HEADER.encode(), b"PK\x03\x04 an excel workbook"])
def test_an_empty_or_headless_file_or_a_workbook_is_422(upload, orgs, content, count_instruments):
    body = assert_problem(upload(orgs["a"], content), 422)
    assert body["rows"]
    assert count_instruments() == 0


def test_a_missing_file_part_is_422_naming_file(upload, orgs):
    assert_problem(upload(orgs["a"], None), 422, "file")
    assert_problem(upload(orgs["a"], csv_bytes(HEADER), part="attachment"), 422, "file")


def test_a_missing_or_unknown_organization_is_422(upload, orgs, count_instruments):
    content = csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,")
    assert_problem(upload(None, content), 422, "organization_id")
    assert_problem(upload("00000000-0000-4000-8000-000000000000", content), 422, "organization_id")
    assert_problem(upload("%00", content), 422, "organization_id")
    assert count_instruments() == 0


@pytest.mark.parametrize("extra_bytes", [1, 2 * 1024 * 1024])
def test_a_file_over_the_size_limit_is_413(upload, orgs, count_instruments, extra_bytes):
    content = csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,")
    content += b" " * (5 * 1024 * 1024 + extra_bytes - len(content))
    assert len(content) == 5 * 1024 * 1024 + extra_bytes
    body = assert_problem(upload(orgs["a"], content), 413)
    assert body["code"] == "too_large"
    assert count_instruments() == 0


def test_a_file_of_exactly_the_size_limit_is_read(upload, orgs, count_instruments):
    content = csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,")
    content += b"\n" * (5 * 1024 * 1024 - len(content))
    assert upload(orgs["a"], content).json == {"created": 1, "updated": 0}


def test_an_enterprise_imports_into_its_own_organization_only(upload, token_for, orgs, count_instruments):
    content = csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,")
    assert upload(orgs["a"], content, headers=token_for("enterprise", orgs["a"])).json == {"created": 1,
                                                                                          "updated": 0}
    assert_problem(upload(orgs["b"], content, headers=token_for("enterprise", orgs["a"])), 404)
    assert count_instruments() == 1


def test_lab_staff_imports_and_a_partner_or_anonymous_caller_cannot(client, upload, lab, token_for, orgs,
                                                                   count_instruments):
    content = csv_bytes(HEADER, "压力表,压力表,P-1,6,true,,,")
    assert_problem(upload(orgs["a"], content, headers=token_for("partner", orgs["university"])), 403)
    anonymous = client.post(f"{IMPORT}?organization_id={orgs['a']}",
                            data={"file": (io.BytesIO(content), "a.csv")}, content_type="multipart/form-data")
    assert_problem(anonymous, 401)
    assert count_instruments() == 0
    assert upload(orgs["a"], content, headers=lab).status_code == 200


def test_the_spec_documents_the_multipart_body(client):
    operation = client.get("/openapi.json").json["paths"][IMPORT]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "organization_id" in {p["name"] for p in operation["parameters"]}
    assert "422" in operation["responses"] and "413" in operation["responses"]
    assert schema  # the `file` part, by reference or inline
