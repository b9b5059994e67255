"""The matrix covers every endpoint: a route that has no row fails here, so no endpoint is added without
deciding who may call it; and the matrix says what each service's OpenAPI spec documents."""

from __future__ import annotations

import pytest

from shared.auth import ROLES
from shared.db import Database
from tests.integration.authorization.calls import CALLS
from tests.integration.authorization.matrix import API, CALLERS, ROWS, SERVICES
from tests.integration.authorization.world import PREPARE, create_apps

# Documentation and static files: the same for everyone, and not part of the API.
NOT_API = {"static", "api-docs.openapi_json", "api-docs.openapi_swagger_ui"}
# The column that shows what a role may do when it is not confined to another organization.
ROLE_COLUMN = {"admin": "admin", "lab_staff": "lab", "enterprise": "ent:own", "partner": "par:own"}


@pytest.fixture(scope="module")
def apps(migrated_database_factory, signing_key):
    databases = {name: Database(migrated_database_factory("sqlite", name, PREPARE[name])) for name in SERVICES}
    yield create_apps(databases, signing_key)
    for database in databases.values():
        database.dispose()


def routes(app) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_API
            for method in rule.methods - {"HEAD", "OPTIONS"}}


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_has_a_row_and_every_row_a_route(apps, service):
    served = routes(apps[service])
    in_matrix = {(row.method, row.rule) for row in ROWS[service]}

    assert sorted(served - in_matrix) == [], "routes without a row in tests/integration/authorization/matrix.py"
    assert sorted(in_matrix - served) == [], "rows of routes the service does not serve"


@pytest.mark.parametrize("service", SERVICES)
def test_every_call_is_of_a_row(service):
    titles = {row.title for row in ROWS[service]}
    assert sorted(set(CALLS[service]) - titles) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_row_is_given_once_with_a_status_for_every_caller(service):
    titles = [row.title for row in ROWS[service]]
    assert sorted({title for title in titles if titles.count(title) > 1}) == []
    for row in ROWS[service]:
        assert set(row.expected) == {caller.column for caller in CALLERS}, row.title


@pytest.mark.parametrize("service", SERVICES)
def test_the_matrix_says_what_the_openapi_spec_documents(apps, service):
    """An operation documented without security needs no token; one documented with roles (x-roles) is
    403 to every other role, and to no role it names; one without roles is 403 to nobody."""
    spec = apps[service].test_client().get("/openapi.json").get_json()
    disagreements = []
    for row in ROWS[service]:
        if not row.rule.startswith(API) or row.variant:
            continue  # health and metrics are not in the spec; variants differ on purpose
        path = row.rule.replace("<", "{").replace(">", "}")
        operation = spec["paths"][path][row.method.lower()]
        public = operation.get("security") == []
        if public != (row.expected["none"] != 401):
            disagreements.append(f"{row.title}: documented {'without' if public else 'with'} a token, "
                                 f"but without one it is {row.expected['none']}")
        roles = operation.get("x-roles", [] if public else list(ROLES))
        for role in ROLES:
            refused = row.expected[ROLE_COLUMN[role]] == 403
            if refused == (role in roles) and not public:
                disagreements.append(f"{row.title}: x-roles {roles}, but {role} gets "
                                     f"{row.expected[ROLE_COLUMN[role]]}")
    assert disagreements == []
