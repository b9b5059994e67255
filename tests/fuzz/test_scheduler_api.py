"""Hostile input against every operation of the scheduler's OpenAPI spec, as staff and as a partner."""

from __future__ import annotations

from tests.fuzz.support import KEEP_APP_ACROSS_CASES, call_and_validate, fuzz_schema, open_to

schema = fuzz_schema("scheduler")


@schema.parametrize()
@KEEP_APP_ACROSS_CASES
def test_scheduler_as_admin(case, service_app, tokens):
    call_and_validate(case, service_app("scheduler"), tokens["admin"])


@open_to(schema, "partner").parametrize()
@KEEP_APP_ACROSS_CASES
def test_scheduler_as_partner(case, service_app, tokens):
    call_and_validate(case, service_app("scheduler"), tokens["partner"])
