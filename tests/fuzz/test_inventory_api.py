"""Hostile input against every operation of the inventory's OpenAPI spec, as staff and as an enterprise."""

from __future__ import annotations

from tests.fuzz.support import KEEP_APP_ACROSS_CASES, call_and_validate, fuzz_schema, open_to

schema = fuzz_schema("inventory")


@schema.parametrize()
@KEEP_APP_ACROSS_CASES
def test_inventory_as_admin(case, service_app, tokens):
    call_and_validate(case, service_app("inventory"), tokens["admin"])


@open_to(schema, "enterprise").parametrize()
@KEEP_APP_ACROSS_CASES
def test_inventory_as_enterprise(case, service_app, tokens):
    call_and_validate(case, service_app("inventory"), tokens["enterprise"])
