"""Every endpoint x every caller -> the status the policy in matrix.py gives, on SQLite and PostgreSQL.

Each case is one request to the seeded world (world.py); a request that may have written anything is
followed by a restore of that service's database, so no case depends on another.
"""

from __future__ import annotations

import pytest

from tests.integration.authorization.calls import call_of
from tests.integration.authorization.matrix import CALLERS, ROWS, SERVICES, Caller, Row

CASES = [pytest.param(row, caller, id=f"{service} {row.title} {caller.label} -> {row.expected[caller.column]}")
         for service in SERVICES for row in ROWS[service] for caller in CALLERS]
PROBLEM_JSON = "application/problem+json"


def send(world, row: Row, headers: dict, *, unknown_ids: bool = False):
    """The row's request; with ``unknown_ids`` every id in the path names nothing at all."""
    call = call_of(row.service, row.title)
    options: dict = {"headers": headers}
    if call.query:
        options["query_string"] = call.query(world)
    if call.json:
        options["json"] = call.json(world)
    if call.form:
        options.update(data=call.form(world), content_type="application/x-www-form-urlencoded")
    if call.files:
        options.update(data=call.files(world), content_type="multipart/form-data")
    path = world.path(row.rule, call.params, unknown=unknown_ids)
    try:
        return world.services[row.service].client.open(path, method=row.method, **options)
    finally:
        if row.method != "GET":
            world.restore(row.service)


def describe(response) -> str:
    body = response.get_data(as_text=True)
    return f"{response.status_code} {body[:300]}"


def problem(response) -> tuple:
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("title"), body.get("detail"), body.get("code")


@pytest.mark.parametrize(("row", "caller"), CASES)
def test_the_caller_gets_the_status_the_policy_gives(world, row: Row, caller: Caller):
    response = send(world, row, world.headers(caller))

    expected = row.expected[caller.column]
    assert response.status_code == expected, describe(response)
    if expected >= 400:
        assert response.mimetype == PROBLEM_JSON, describe(response)
    scope = call_of(row.service, row.title).scope
    if scope is not None and expected == 200:
        assert scope.problems(response, caller, world) == []
    if expected == 404 and "<" in row.rule:
        # What the caller may not see is answered exactly as what does not exist: ids cannot be probed.
        assert problem(response) == problem(send(world, row, world.headers(caller), unknown_ids=True))


def test_a_refused_caller_is_refused_before_its_body_is_read(world):
    """On an endpoint that needs a token, 401 and 403 do not depend on what is sent: a body that is not
    even JSON gets the same answer, never the 400 or 422 that would tell a caller without the right how
    to shape a request. (Variants are left out: the fields an organization may change are a rule on the
    body itself.)"""
    wrong = []
    for service in SERVICES:
        for row in ROWS[service]:
            if row.method == "GET" or row.variant or row.expected["none"] != 401:
                continue
            for caller in CALLERS:
                expected = row.expected[caller.column]
                if expected not in (401, 403):
                    continue
                path = world.path(row.rule, call_of(service, row.title).params)
                response = world.services[service].client.open(
                    path, method=row.method, headers=world.headers(caller), data="{not json",
                    content_type="application/json")
                if response.status_code < 400:
                    world.restore(service)
                if response.status_code != expected:
                    wrong.append(f"{service} {row.title} {caller.label}: {describe(response)}")
    assert wrong == []


@pytest.mark.parametrize("role, column", [("enterprise", "ent:other"), ("partner", "par:other")])
def test_a_token_naming_no_organization_reads_what_another_organization_reads(world, role, column):
    """The issuer gives every enterprise and partner client an organization, but a token's ``org`` may be
    null: such a caller is a stranger to every organization and to the institute's own items."""
    stranger = Caller(column, role)
    wrong = []
    for service in SERVICES:
        for row in ROWS[service]:
            if row.method != "GET":
                continue
            response = send(world, row, world.tokens.headers(role))
            scope = call_of(service, row.title).scope
            if response.status_code != row.expected[column]:
                wrong.append(f"{service} {row.title}: {describe(response)}")
            elif scope is not None and response.status_code == 200:
                wrong += [f"{service} {row.title}: {problem}"
                          for problem in scope.problems(response, stranger, world)]
    assert wrong == []


def test_the_institute_is_not_confined_to_an_organization_its_token_names(world):
    """An admin or lab staff client may be registered with an organization (POST /clients allows it); it
    still reads what it reads without one, other organizations' resources included."""
    wrong = []
    for service in SERVICES:
        for row in ROWS[service]:
            if row.method != "GET":
                continue
            for role, column in (("admin", "admin"), ("lab_staff", "lab")):
                response = send(world, row, world.tokens.headers(role, world.organization_b))
                if response.status_code != row.expected[column]:
                    wrong.append(f"{service} {row.title} {role} of organization b: {describe(response)}")
    assert wrong == []
