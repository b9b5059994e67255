"""The public catalogue of standards."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import event

from services.inventory.models import Equipment, Standard
from shared.timeutil import institute_today

URL = "/api/v1/catalogue"


@pytest.fixture
def add_standard(inventory_db):
    """Writes a standard (and its equipment) directly; usable unless told otherwise."""

    def add(code: str, *, equipment_due: list[dt.date | None] | None = None, **fields) -> str:
        today = institute_today()
        values = {
            "code": code, "name": f"{code} 标准装置", "name_en": f"{code} standard", "discipline": "thermal",
            "measurand": "温度", "range_min": -40.0, "range_max": 300.0, "range_unit": "°C",
            "uncertainty": "U=0.05 °C (k=2)", "certificate_number": f"[2024]鲁量标淄证字第{code}号",
            "certificate_issued_on": today - dt.timedelta(days=365),
            "certificate_expires_on": today + dt.timedelta(days=365),
        }
        values.update(fields)
        with inventory_db.transaction() as session:
            standard = Standard(**values)
            session.add(standard)
            session.flush()
            if equipment_due is None:
                equipment_due = [today + dt.timedelta(days=200)]
            for index, due_on in enumerate(equipment_due):
                session.add(Equipment(standard_id=standard.id, role="main" if index == 0 else "auxiliary",
                                      name=f"equipment {index}", calibration_interval_months=12,
                                      due_on=due_on))
            return standard.id

    return add


def codes(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [entry["code"] for entry in response.get_json()]


class TestTheCatalogue:
    def test_anyone_reads_the_public_standards_that_are_not_retired(self, client, add_standard):
        add_standard("T-001")
        add_standard("T-002", status="suspended")
        add_standard("T-003", status="retired")
        add_standard("T-004", public=False)
        add_standard("T-005", status="sealed")

        response = client.get(URL)

        assert codes(response) == ["T-001", "T-002", "T-005"]

    def test_an_entry_says_what_a_partner_needs_to_choose(self, client, add_standard):
        standard_id = add_standard("T-001", accuracy_class="二等", lab="温度实验室",
                                   industries=["氢能新材料"], bookable=False)

        (entry,) = client.get(URL).get_json()

        assert entry == {
            "id": standard_id, "code": "T-001", "name": "T-001 标准装置", "name_en": "T-001 standard",
            "discipline": "thermal", "measurand": "温度", "range": {"min": -40.0, "max": 300.0, "unit": "°C"},
            "uncertainty": "U=0.05 °C (k=2)", "accuracy_class": "二等", "lab": "温度实验室",
            "industries": ["氢能新材料"], "bookable": False, "usable": True,
        }

    def test_usable_is_derived_from_status_certificate_and_equipment(self, client, add_standard):
        today = institute_today()
        add_standard("T-001")
        add_standard("T-002", status="suspended")
        add_standard("T-003", certificate_expires_on=today - dt.timedelta(days=1))
        add_standard("T-004", equipment_due=[today + dt.timedelta(days=100), today - dt.timedelta(days=1)])
        add_standard("T-005", equipment_due=[None])
        add_standard("T-006", equipment_due=[today])  # still valid on its due date

        usable = {entry["code"]: entry["usable"] for entry in client.get(URL).get_json()}

        assert usable == {"T-001": True, "T-002": False, "T-003": False, "T-004": False, "T-005": False,
                          "T-006": True}
        assert codes(client.get(f"{URL}?usable=true")) == ["T-001", "T-006"]
        assert codes(client.get(f"{URL}?usable=false")) == ["T-002", "T-003", "T-004", "T-005"]

    def test_filters_by_discipline_and_text(self, client, add_standard):
        add_standard("T-001")
        add_standard("P-001", discipline="mechanical", measurand="压力", name="数字压力计标准装置")
        add_standard("F-001", discipline="physical_chemistry", measurand="gas flow", name="气体流量标准装置",
                     name_en="Gas Flow Standard")

        assert codes(client.get(f"{URL}?discipline=mechanical")) == ["P-001"]
        assert codes(client.get(f"{URL}?q=压力")) == ["P-001"]
        assert codes(client.get(f"{URL}?q=GAS flow")) == ["F-001"]
        assert codes(client.get(f"{URL}?q=t-00")) == ["T-001"]
        assert codes(client.get(f"{URL}?q=_")) == []
        assert codes(client.get(f"{URL}?discipline=mechanical&q=温度")) == []

    def test_pages_count_only_what_the_filter_keeps(self, client, add_standard):
        for index in range(5):
            add_standard(f"T-00{index}", equipment_due=[None] if index % 2 else None)
        add_standard("T-009", status="retired")

        first = client.get(f"{URL}?page_size=2")
        usable_page_2 = client.get(f"{URL}?usable=true&page_size=2&page=2")

        assert codes(first) == ["T-000", "T-001"]
        assert json.loads(first.headers["X-Pagination"])["total"] == 5
        assert codes(usable_page_2) == ["T-004"]
        assert json.loads(usable_page_2.headers["X-Pagination"])["total"] == 3

    def test_the_equipment_is_loaded_without_a_query_per_standard(self, client, add_standard, inventory_db):
        def statements_for(path: str) -> int:
            seen = []
            listener = lambda *args: seen.append(args[2])  # noqa: E731 - statement text
            event.listen(inventory_db.engine, "before_cursor_execute", listener)
            try:
                codes(client.get(path))
            finally:
                event.remove(inventory_db.engine, "before_cursor_execute", listener)
            return len(seen)

        add_standard("T-000", equipment_due=[None, None])
        with_one = {path: statements_for(path) for path in (URL, f"{URL}?usable=false")}
        for index in range(1, 8):
            add_standard(f"T-00{index}", equipment_due=[None, None, None])

        for path, count in with_one.items():
            assert statements_for(path) == count

    def test_a_token_is_not_needed_and_a_bad_one_is_ignored(self, client, add_standard):
        add_standard("T-001")

        assert codes(client.get(URL, headers={"Authorization": "Bearer garbage"})) == ["T-001"]

    def test_an_empty_catalogue_is_an_empty_list(self, client):
        assert codes(client.get(URL)) == []

    @pytest.mark.parametrize("query, field", [
        ("discipline=alchemy", "discipline"), ("usable=maybe", "usable"), ("q=" + "x" * 101, "q"),
        ("q=a%00", "q"), ("page_size=0", "page_size"), ("page=-1", "page"),
    ])
    def test_a_bad_filter_is_named(self, client, query, field):
        response = client.get(f"{URL}?{query}")

        assert response.status_code == 422
        assert response.mimetype == "application/problem+json"
        assert field in response.get_json()["errors"]

    @pytest.mark.parametrize("usable", ["", "&usable=true"])
    def test_a_page_beyond_the_last_is_empty_even_an_absurd_one(self, client, add_standard, usable):
        add_standard("T-001")

        response = client.get(f"{URL}?page=99999999999999999999{usable}")

        assert codes(response) == []
        assert json.loads(response.headers["X-Pagination"])["total"] == 1

    def test_the_catalogue_is_documented_as_open(self, client):
        operation = client.get("/openapi.json").get_json()["paths"][URL]["get"]

        assert operation["security"] == []
        parameters = {p["name"] for p in operation["parameters"]}
        assert parameters >= {"discipline", "q", "usable", "page", "page_size"}
