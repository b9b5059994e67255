"""Fuzzing a service against the OpenAPI spec it serves: the spec, the run's size, the checks, real ids
for path parameters and bodies, and If-Match headers.

Size and randomness come from the environment:

- ``FUZZ_MAX_EXAMPLES``: generated cases per operation and role in the fuzzing phase (default 10, the
  bounded run of ``make test``; ``make fuzz`` sets a large number). The examples and coverage phases
  (boundary values, missing and wrongly typed fields) run whatever this says.
- ``FUZZ_SEED``: the seed of the cases (``make fuzz`` draws one and prints it; the same seed replays the
  same cases). Without it the run is derandomized: the same cases every time.
"""

from __future__ import annotations

import importlib
import os

import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.auth import public_pem
from shared.config import Settings
from shared.db import Database

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
SEED = os.environ.get("FUZZ_SEED")

# What every response must satisfy: no 5xx; a documented status code and content type; a body and
# headers that match the spec. And what the API must refuse: a call without its token or with a bad one
# (401), without a required header, with a method the path does not serve (405).
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance",
          "ignored_auth", "missing_required_header", "unsupported_method")

#: If-Match values: tags of versions the seeded rows have, a weak tag in a list, "*" and junk.
IF_MATCH = st.one_of(
    st.just("*"),
    st.integers(0, 3).map(lambda version: f'"{version}"'),
    st.integers(0, 3).map(lambda version: f'W/"{version}", "{version + 1}"'),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)

# The app and its database are made once per operation, not per case: cases of one operation share them
# as a client's requests share a server.
KEEP_APP_ACROSS_CASES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Real rows of the database each service is fuzzed on: set by the fixture that makes its app.
KNOWN_ROWS: dict[str, list[dict[str, str]]] = {}


def settings_for(service: str, database: Database, signing_key: Ed25519PrivateKey) -> Settings:
    """The settings of a service under test: its database, the run's signing key (the inventory signs,
    the others verify), and no bootstrap client (the seeded data has its API clients)."""
    result = Settings(service, database_url=database.url)
    if service == "inventory":
        result.jwt_private_key = signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    else:
        result.jwt_public_key = public_pem(signing_key)
    result.bootstrap_client_id = result.bootstrap_client_secret = None
    result.institute_tz = "Asia/Shanghai"
    return result


def create_app(service: str, database: Database, signing_key: Ed25519PrivateKey):
    app = importlib.import_module(f"services.{service}.app").create_app(
        settings_for(service, database, signing_key), database)
    app.testing = True
    return app


def fuzz_schema(service: str):
    """The service's schema for ``@schema.parametrize()``, sized and seeded from the environment, whose
    path parameters and body ids name real rows half of the time."""
    config = schemathesis.Config.from_dict({
        **({"seed": int(SEED)} if SEED is not None else {}),
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": SEED is None,
                       "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })
    # The spec as the service serves it, from an app on an empty in-memory database: each test sends its
    # cases to its own app (``call_and_validate``), this one only answers for the spec.
    schema = schemathesis.openapi.from_wsgi(
        "/openapi.json", create_app(service, Database("sqlite://"), Ed25519PrivateKey.generate()), config=config)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        names = set(path_parameters or ())
        rows = _rows(service, names)
        if not names or not rows:
            return st.just(path_parameters)
        return st.one_of(st.just(path_parameters), st.sampled_from(rows))

    @schema.hook
    def flatmap_body(context, body):
        # An id in a body (a booking's standard_id, an instrument's organization_id) names a real row half
        # of the time too, so that creations get past "no such standard" to the rules behind it.
        if not isinstance(body, dict):
            return st.just(body)
        choices = {name: st.one_of(st.just(body[name]), st.sampled_from([row[name] for row in rows]))
                   for name in body if (rows := _rows(service, {name}))}
        if not choices:
            return st.just(body)
        return st.fixed_dictionaries(choices).map(lambda chosen: {**body, **chosen})

    @schema.hook
    def flatmap_headers(context, headers):
        # Changes honour If-Match (412 when it names another version) without the spec declaring the
        # header, so it is added here to half of the changes.
        if context.operation.method.upper() not in ("PUT", "PATCH", "DELETE"):
            return st.just(headers)
        return st.one_of(st.just(headers), IF_MATCH.map(lambda tag: {**(headers or {}), "If-Match": tag}))

    return schema


def _rows(service: str, names: set[str]) -> list[dict[str, str]]:
    """The service's known rows named by exactly these path parameters; sorted, so that a derandomized
    run draws the same rows whatever order the database gave them in."""
    return sorted((row for row in KNOWN_ROWS.get(service, ()) if set(row) == names),
                  key=lambda row: sorted(row.items()))


def open_to(schema, role: str):
    """The operations that need a token and let a client of this role in (by the ``x-roles`` the spec
    names), for fuzzing as that client: the organization-scoped paths."""

    def allowed(context) -> bool:
        definition = context.operation.definition.raw
        return bool(definition.get("security")) and role in definition.get("x-roles", [role])

    return schema.include(allowed)


def call_and_validate(case, app, headers: dict) -> None:
    """Send the case to the app with these headers (the caller's token) and run the checks."""
    case.call_and_validate(app=app, headers=headers)
