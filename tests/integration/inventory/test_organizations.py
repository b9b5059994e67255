"""Organizations: registration, reading, changes, and who may do what."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services.inventory.models import Organization
from tests.support import valid_credit_code

URL = "/api/v1/organizations"
NEW_CODE = valid_credit_code("91370303MA3D12345")


def full_width(text: str) -> str:
    """What a Chinese input method often produces: full-width digits and letters."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


def new_enterprise(**overrides) -> dict:
    body = {
        "name": "淄博示例质子交换膜科技有限公司",
        "name_en": "Zibo Example PEM Technology Co., Ltd.",
        "kind": "enterprise",
        "credit_code": NEW_CODE,
        "contacts": [
            {"name": "李娜", "email": "li.na@example.com", "phone": "+86 533 0000000", "locale": "zh-CN"},
            {"name": "Tom", "email": "tom@example.com", "locale": "en"},
        ],
        "address": "山东省淄博市张店区示例路 1 号",
        "industry_chains": ["氢能新材料"],
        "alliance_member": True,
    }
    body.update(overrides)
    return body


def organization_count(inventory_db) -> int:
    with inventory_db.Session() as session:
        return session.scalar(select(func.count()).select_from(Organization))


def register(client, headers, **overrides) -> dict:
    response = client.post(URL, json=new_enterprise(**overrides), headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


class TestRegisteringAnOrganization:
    def test_lab_staff_registers_an_enterprise_and_chinese_text_round_trips(self, client, lab, outbox):
        response = client.post(URL, json=new_enterprise(), headers=lab)

        assert response.status_code == 201
        created = response.get_json()
        assert response.headers["Location"].endswith(f"{URL}/{created['id']}")
        assert response.headers["ETag"] == f'"{created["version"]}"'
        assert "淄博示例质子交换膜科技有限公司".encode() in response.get_data()  # not \\u-escaped
        for field, value in new_enterprise().items():
            assert created[field] == value
        fetched = client.get(response.headers["Location"], headers=lab).get_json()
        assert fetched == created
        (event,) = outbox("organization.registered")
        assert event["type"] == "refstd.inventory.organization.registered"
        assert event["subject"] == created["id"]
        assert event["data"]["name"] == "淄博示例质子交换膜科技有限公司"
        assert event["data"]["credit_code"] == NEW_CODE
        assert event["data"]["contacts"] == created["contacts"]
        assert event["data"]["version"] == created["version"]

    def test_the_credit_code_is_stored_normalised(self, client, lab):
        created = register(client, lab, credit_code=" " + full_width(NEW_CODE.lower()) + " ")

        assert created["credit_code"] == NEW_CODE

    def test_a_university_needs_no_credit_code(self, client, admin):
        created = register(client, admin, name="山东示例大学", kind="university", credit_code=None)

        assert created["credit_code"] is None
        assert created["kind"] == "university"

    def test_optional_fields_take_their_defaults(self, client, lab):
        response = client.post(URL, json={"name": "示例研究院", "kind": "institute"}, headers=lab)

        created = response.get_json()
        assert created["contacts"] == created["industry_chains"] == []
        assert created["alliance_member"] is False

    @pytest.mark.parametrize("overrides, field", [
        ({"credit_code": NEW_CODE[:17] + ("0" if NEW_CODE[17] != "0" else "1")}, "credit_code"),
        ({"credit_code": "91370303MA3D1234I" + "0"}, "credit_code"),  # I is not in the alphabet
        ({"credit_code": "91370303MA3D1234"}, "credit_code"),  # too short
        ({"credit_code": ""}, "credit_code"),
        ({"credit_code": None}, "credit_code"),  # required for an enterprise
        ({"credit_code": 913703}, "credit_code"),
        ({"contacts": [{"name": "李娜", "email": "not-an-email"}]}, "contacts.0.email"),
        ({"contacts": [{"name": "李娜", "email": "li@example.com", "locale": "fr"}]}, "contacts.0.locale"),
        ({"contacts": "李娜"}, "contacts"),
        ({"kind": "company"}, "kind"),
        ({"kind": None}, "kind"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "示例\x00公司"}, "name"),
        ({"name": "\ud800"}, "name"),
        ({"alliance_member": "maybe"}, "alliance_member"),
        ({"homepage": "https://example.com"}, "homepage"),
        ({"id": "chosen-by-me"}, "id"),
        ({"version": 7}, "version"),
    ])
    def test_a_bad_field_is_named_and_nothing_is_written(self, client, lab, inventory_db, outbox,
                                                         overrides, field):
        response = client.post(URL, data=json.dumps(new_enterprise(**overrides)),
                               content_type="application/json", headers=lab)

        assert response.status_code == 422, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert field in response.get_json()["errors"]
        assert organization_count(inventory_db) == 0
        assert outbox() == []

    def test_the_check_digit_message_says_what_is_expected(self, client, lab):
        wrong = NEW_CODE[:17] + ("0" if NEW_CODE[17] != "0" else "1")

        response = client.post(URL, json=new_enterprise(credit_code=wrong), headers=lab)

        assert f"require {NEW_CODE[17]!r}" in response.get_json()["errors"]["credit_code"][0]

    def test_a_required_field_missing_is_named(self, client, lab, inventory_db):
        response = client.post(URL, json={"credit_code": NEW_CODE}, headers=lab)

        assert response.status_code == 422
        assert {"name", "kind"} <= set(response.get_json()["errors"])
        assert organization_count(inventory_db) == 0

    @pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
    def test_a_body_that_is_not_an_object_is_refused(self, client, lab, inventory_db, body):
        response = client.post(URL, data=body, content_type="application/json", headers=lab)

        assert response.status_code in (400, 422)
        assert response.mimetype == "application/problem+json"
        assert organization_count(inventory_db) == 0

    def test_a_duplicate_credit_code_is_a_conflict(self, client, lab, orgs, inventory_db, outbox):
        with inventory_db.Session() as session:
            existing = session.get(Organization, orgs["a"]).credit_code

        response = client.post(URL, json=new_enterprise(credit_code=existing.lower()), headers=lab)

        assert response.status_code == 409
        body = response.get_json()
        assert body["code"] == "duplicate"
        assert body["conflicts"][0]["id"] == orgs["a"]
        assert organization_count(inventory_db) == 3
        assert outbox() == []


class TestReadingOrganizations:
    def test_the_list_filters_by_kind_and_name(self, client, lab, orgs):
        by_kind = client.get(f"{URL}?kind=university", headers=lab)
        by_name = client.get(f"{URL}?q=氢能", headers=lab)
        by_english = client.get(f"{URL}?q=biomedicine", headers=lab)
        by_wildcard = client.get(f"{URL}?q=%25", headers=lab)

        assert [o["id"] for o in by_kind.get_json()] == [orgs["university"]]
        assert [o["id"] for o in by_name.get_json()] == [orgs["a"]]
        assert [o["id"] for o in by_english.get_json()] == [orgs["b"]]
        assert by_wildcard.get_json() == []

    def test_the_list_is_paginated(self, client, lab, orgs):
        response = client.get(f"{URL}?page_size=2&page=2", headers=lab)

        assert response.status_code == 200
        assert len(response.get_json()) == 1
        assert json.loads(response.headers["X-Pagination"])["total"] == 3

    def test_a_page_beyond_the_last_is_empty_even_an_absurd_one(self, client, lab, orgs):
        response = client.get(f"{URL}?page=99999999999999999999", headers=lab)

        assert response.status_code == 200
        assert response.get_json() == []

    @pytest.mark.parametrize("query, field", [("kind=company", "kind"), ("page_size=501", "page_size"),
                                              ("q=a%00b", "q"), ("page=0", "page")])
    def test_a_bad_filter_is_named(self, client, lab, query, field):
        response = client.get(f"{URL}?{query}", headers=lab)

        assert response.status_code == 422
        assert field in response.get_json()["errors"]

    def test_get_answers_an_etag(self, client, lab, orgs):
        response = client.get(f"{URL}/{orgs['a']}", headers=lab)

        assert response.status_code == 200
        assert response.headers["ETag"] == '"1"'
        assert response.get_json()["name"] == "淄博示例氢能材料有限公司"
        assert response.get_json()["contacts"][0]["name"] == "王工"

    @pytest.mark.parametrize("organization_id", ["no-such-id", "a%00b", "x" * 300, "%ED%A0%80"])
    def test_an_unknown_or_malformed_id_is_404(self, client, lab, organization_id):
        response = client.get(f"{URL}/{organization_id}", headers=lab)

        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"


class TestChangingAnOrganization:
    def test_lab_staff_changes_fields_and_the_event_carries_the_new_state(self, client, lab, orgs, outbox):
        change = {"name": "示例生物医药有限公司", "alliance_member": True}

        response = client.patch(f"{URL}/{orgs['b']}", json=change, headers={**lab, "If-Match": '"1"'})

        assert response.status_code == 200
        changed = response.get_json()
        assert changed["name"] == "示例生物医药有限公司"
        assert changed["alliance_member"] is True
        assert changed["version"] == 2
        assert response.headers["ETag"] == '"2"'
        (event,) = outbox("organization.updated")
        assert event["subject"] == orgs["b"]
        assert event["data"]["name"] == "示例生物医药有限公司"
        assert event["data"]["version"] == 2
        assert event["data"]["credit_code"] == changed["credit_code"]

    def test_a_stale_if_match_is_412_and_nothing_changes(self, client, lab, orgs, outbox):
        assert client.patch(f"{URL}/{orgs['b']}", json={"address": "一"}, headers=lab).status_code == 200

        response = client.patch(f"{URL}/{orgs['b']}", json={"address": "二"},
                                headers={**lab, "If-Match": '"1"'})

        assert response.status_code == 412
        assert client.get(f"{URL}/{orgs['b']}", headers=lab).get_json()["address"] == "一"
        assert len(outbox("organization.updated")) == 1

    def test_a_patch_that_changes_nothing_publishes_nothing(self, client, lab, orgs, outbox):
        response = client.patch(f"{URL}/{orgs['b']}", json={"name": "Example Biomedicine Co."}, headers=lab)

        assert response.status_code == 200
        assert response.get_json()["version"] == 1
        assert outbox() == []

    def test_an_enterprise_needs_its_credit_code_after_a_kind_change(self, client, lab, orgs, outbox):
        response = client.patch(f"{URL}/{orgs['university']}", json={"kind": "enterprise"}, headers=lab)

        assert response.status_code == 422
        assert "credit_code" in response.get_json()["errors"]
        assert client.get(f"{URL}/{orgs['university']}", headers=lab).get_json()["kind"] == "university"
        assert outbox() == []

    def test_a_kind_change_with_a_credit_code_is_accepted(self, client, lab, orgs):
        change = {"kind": "enterprise", "credit_code": NEW_CODE}

        response = client.patch(f"{URL}/{orgs['university']}", json=change, headers=lab)

        assert response.status_code == 200
        assert response.get_json()["credit_code"] == NEW_CODE

    def test_an_enterprise_cannot_lose_its_credit_code(self, client, lab, orgs, outbox):
        response = client.patch(f"{URL}/{orgs['a']}", json={"credit_code": None}, headers=lab)

        assert response.status_code == 422
        assert "credit_code" in response.get_json()["errors"]
        assert outbox() == []

    @pytest.mark.parametrize("body, field", [
        ({"contacts": [{"name": "王工", "email": "wang@"}]}, "contacts.0.email"),
        ({"credit_code": "91370300MA3C0000O1"}, "credit_code"),
        ({"kind": "company"}, "kind"),
        ({"name": None}, "name"),
        ({"nickname": "x"}, "nickname"),
    ])
    def test_a_bad_field_in_a_patch_is_named_and_nothing_changes(self, client, lab, orgs, outbox, body,
                                                                  field):
        response = client.patch(f"{URL}/{orgs['a']}", json=body, headers=lab)

        assert response.status_code == 422
        assert field in response.get_json()["errors"]
        assert client.get(f"{URL}/{orgs['a']}", headers=lab).get_json()["version"] == 1
        assert outbox() == []

    def test_taking_another_organizations_credit_code_is_a_conflict(self, client, lab, orgs, inventory_db):
        with inventory_db.Session() as session:
            existing = session.get(Organization, orgs["a"]).credit_code

        response = client.patch(f"{URL}/{orgs['b']}", json={"credit_code": existing}, headers=lab)

        assert response.status_code == 409
        assert response.get_json()["code"] == "duplicate"

    def test_an_unknown_organization_is_404(self, client, lab):
        assert client.patch(f"{URL}/no-such-id", json={"address": "x"}, headers=lab).status_code == 404


class TestWhoMayDoWhat:
    @pytest.fixture
    def callers(self, token_for, orgs):
        return {
            "admin": token_for("admin"),
            "lab_staff": token_for("lab_staff"),
            "partner": token_for("partner", orgs["university"]),
            "enterprise": token_for("enterprise", orgs["a"]),
            "nobody": {},
        }

    @pytest.mark.parametrize("caller, status", [("admin", 201), ("lab_staff", 201), ("partner", 403),
                                                ("enterprise", 403), ("nobody", 401)])
    def test_staff_register_organizations(self, client, callers, inventory_db, outbox, caller, status):
        before = organization_count(inventory_db)

        response = client.post(URL, json=new_enterprise(), headers=callers[caller])

        assert response.status_code == status
        assert response.mimetype == ("application/json" if status == 201 else "application/problem+json")
        written = 1 if status == 201 else 0
        assert organization_count(inventory_db) == before + written
        assert len(outbox()) == written

    @pytest.mark.parametrize("caller, visible", [("admin", ["a", "b", "university"]),
                                                 ("lab_staff", ["a", "b", "university"]),
                                                 ("partner", ["university"]), ("enterprise", ["a"])])
    def test_enterprises_and_partners_list_only_their_own_organization(self, client, callers, orgs, caller,
                                                                       visible):
        response = client.get(URL, headers=callers[caller])

        assert response.status_code == 200
        assert sorted(o["id"] for o in response.get_json()) == sorted(orgs[name] for name in visible)

    def test_a_client_without_an_organization_lists_none(self, client, token_for, orgs):
        assert client.get(URL, headers=token_for("partner", None)).get_json() == []

    def test_listing_needs_a_token(self, client):
        assert client.get(URL).status_code == 401

    @pytest.mark.parametrize("caller, organization, status", [
        ("admin", "b", 200), ("lab_staff", "b", 200), ("enterprise", "a", 200), ("enterprise", "b", 404),
        ("enterprise", "university", 404), ("partner", "university", 200), ("partner", "a", 404),
        ("nobody", "a", 401),
    ])
    def test_reading_one_organization(self, client, callers, orgs, caller, organization, status):
        response = client.get(f"{URL}/{orgs[organization]}", headers=callers[caller])

        assert response.status_code == status

    @pytest.mark.parametrize("caller", ["enterprise", "partner"])
    def test_a_client_changes_its_own_contacts_address_and_english_name(self, client, callers, orgs, outbox,
                                                                        caller):
        own = orgs["a"] if caller == "enterprise" else orgs["university"]
        change = {"contacts": [{"name": "赵敏", "email": "zhao@example.com", "locale": "zh-CN"}],
                  "address": "淄博市高新区", "name_en": "Own Org"}

        response = client.patch(f"{URL}/{own}", json=change, headers=callers[caller])

        assert response.status_code == 200
        for field, value in change.items():
            assert response.get_json()[field] == value
        assert outbox("organization.updated")[0]["data"]["contacts"] == change["contacts"]

    @pytest.mark.parametrize("field, value", [("name", "新名字"), ("kind", "university"),
                                              ("alliance_member", True), ("industry_chains", ["生物医药"]),
                                              ("credit_code", valid_credit_code("91370300MA3C00009"))])
    def test_an_enterprise_may_not_change_other_fields_of_its_own_organization(self, client, callers, orgs,
                                                                              outbox, field, value):
        response = client.patch(f"{URL}/{orgs['a']}", json={field: value, "address": "x"},
                                headers=callers["enterprise"])

        assert response.status_code == 403
        assert response.mimetype == "application/problem+json"
        assert list(response.get_json()["errors"]) == [field]
        assert outbox() == []

    def test_an_enterprise_may_resend_an_unchanged_field(self, client, callers, orgs):
        change = {"name": "淄博示例氢能材料有限公司", "address": "新地址"}

        response = client.patch(f"{URL}/{orgs['a']}", json=change, headers=callers["enterprise"])

        assert response.status_code == 200
        assert response.get_json()["address"] == "新地址"

    @pytest.mark.parametrize("caller, organization", [("enterprise", "b"), ("enterprise", "university"),
                                                      ("partner", "a")])
    def test_another_organization_cannot_be_changed_and_is_not_revealed(self, client, callers, orgs, outbox,
                                                                        caller, organization):
        response = client.patch(f"{URL}/{orgs[organization]}", json={"address": "x"}, headers=callers[caller])

        assert response.status_code == 404
        assert outbox() == []

    def test_changing_needs_a_token(self, client, orgs):
        assert client.patch(f"{URL}/{orgs['a']}", json={"address": "x"}).status_code == 401
