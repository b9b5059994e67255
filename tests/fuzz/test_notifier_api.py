"""Hostile input against every operation of the notifier's OpenAPI spec, as staff, as a partner and as
an enterprise."""

from __future__ import annotations

from tests.fuzz.support import KEEP_APP_ACROSS_CASES, call_and_validate, fuzz_schema, open_to

schema = fuzz_schema("notifier")


@schema.parametrize()
@KEEP_APP_ACROSS_CASES
def test_notifier_as_admin(case, service_app, tokens):
    call_and_validate(case, service_app("notifier"), tokens["admin"])


@open_to(schema, "partner").parametrize()
@KEEP_APP_ACROSS_CASES
def test_notifier_as_partner(case, service_app, tokens):
    call_and_validate(case, service_app("notifier"), tokens["partner"])


@open_to(schema, "enterprise").parametrize()
@KEEP_APP_ACROSS_CASES
def test_notifier_as_enterprise(case, service_app, tokens):
    call_and_validate(case, service_app("notifier"), tokens["enterprise"])
