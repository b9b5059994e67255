"""Tokens (OAuth2 client credentials), the public key set, and API clients."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote_plus

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from services.inventory import clients as client_store
from services.inventory.models import ApiClient
from shared.auth import ALGORITHM, AUDIENCE, ISSUER, TokenSigner

TOKEN_URL = "/api/v1/auth/token"
JWKS_URL = "/api/v1/auth/jwks.json"
CLIENTS_URL = "/api/v1/clients"
BOOTSTRAP_ID = "bootstrap-admin"
BOOTSTRAP_SECRET = "bootstrap-secret-for-tests"


def basic(client_id: str, secret: str) -> dict:
    """HTTP Basic as RFC 6749 §2.3.1 has it: each part form-url-encoded, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def request_token(client, client_id=BOOTSTRAP_ID, secret=BOOTSTRAP_SECRET, **extra):
    return client.post(TOKEN_URL, data={"grant_type": "client_credentials", "client_id": client_id,
                                        "client_secret": secret, **extra})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def verify_with_jwks(client, token: str) -> dict:
    """Verify a token the way the scheduler and notifier do: with the published public key only."""
    keys = jwt.PyJWKSet.from_dict(client.get(JWKS_URL).get_json())
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    return jwt.decode(token, key.key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER)


def assert_oauth_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code
    assert body["error"] == code
    assert response.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    return body


def client_count(inventory_db) -> int:
    with inventory_db.Session() as session:
        return session.scalar(select(func.count()).select_from(ApiClient))


def create_client(client, admin, **body) -> dict:
    response = client.post(CLIENTS_URL, json=body, headers=admin)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


class TestTokenEndpoint:
    def test_the_bootstrap_admin_gets_a_token_with_form_credentials_and_uses_it(self, client):
        response = request_token(client)

        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        assert client.get(CLIENTS_URL, headers=bearer(body["access_token"])).status_code == 200

    def test_http_basic_credentials_are_accepted(self, client):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                               headers=basic(BOOTSTRAP_ID, BOOTSTRAP_SECRET))

        assert response.status_code == 200
        claims = verify_with_jwks(client, response.get_json()["access_token"])
        assert claims["sub"] == BOOTSTRAP_ID
        assert claims["role"] == "admin"
        assert claims["org"] is None

    def test_basic_credentials_are_url_decoded(self, client, inventory_db):
        # RFC 6749 §2.3.1: a client id or secret with reserved characters is form-url-encoded first.
        client_id, secret = "partner:大学 1", "s3cret+/%:é"
        with inventory_db.transaction() as session:
            session.add(ApiClient(id=client_id, name="odd", role="lab_staff",
                                  secret_hash=client_store.hash_secret(secret)))

        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                               headers=basic(client_id, secret))

        assert response.status_code == 200, response.get_json()
        assert verify_with_jwks(client, response.get_json()["access_token"])["sub"] == client_id

    def test_the_form_may_repeat_the_basic_client_id(self, client):
        form = {"grant_type": "client_credentials", "client_id": BOOTSTRAP_ID}

        response = client.post(TOKEN_URL, data=form, headers=basic(BOOTSTRAP_ID, BOOTSTRAP_SECRET))

        assert response.status_code == 200

    def test_scope_and_unknown_parameters_are_ignored(self, client):
        assert request_token(client, scope="everything", audience="x").status_code == 200

    def test_a_wrong_secret_is_invalid_client(self, client):
        assert_oauth_error(request_token(client, secret="not-the-secret"), 401, "invalid_client")

    def test_a_wrong_secret_in_basic_is_invalid_client(self, client):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                               headers=basic(BOOTSTRAP_ID, "not-the-secret"))

        assert_oauth_error(response, 401, "invalid_client")

    def test_an_unknown_client_is_invalid_client(self, client):
        assert_oauth_error(request_token(client, client_id="cl_nobody"), 401, "invalid_client")

    def test_no_credentials_is_invalid_client(self, client):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"})

        assert_oauth_error(response, 401, "invalid_client")

    def test_a_bearer_authorization_header_is_not_client_authentication(self, client):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                               headers={"Authorization": "Bearer abc"})

        assert_oauth_error(response, 401, "invalid_client")

    def test_a_missing_grant_type_is_invalid_request(self, client):
        response = client.post(TOKEN_URL, data={"client_id": BOOTSTRAP_ID, "client_secret": BOOTSTRAP_SECRET})

        body = assert_oauth_error(response, 400, "invalid_request")
        assert "grant_type" in body["detail"]

    def test_an_empty_grant_type_counts_as_missing(self, client):
        assert_oauth_error(request_token(client, grant_type=""), 400, "invalid_request")

    def test_another_grant_type_is_unsupported(self, client):
        assert_oauth_error(request_token(client, grant_type="password"), 400, "unsupported_grant_type")

    def test_a_json_body_is_invalid_request(self, client):
        response = client.post(TOKEN_URL, json={"grant_type": "client_credentials", "client_id": BOOTSTRAP_ID,
                                                "client_secret": BOOTSTRAP_SECRET})

        body = assert_oauth_error(response, 400, "invalid_request")
        assert "form-encoded" in body["detail"]

    def test_a_repeated_parameter_is_invalid_request(self, client):
        response = client.post(TOKEN_URL, data=(
            "grant_type=client_credentials&grant_type=client_credentials"
            f"&client_id={BOOTSTRAP_ID}&client_secret={BOOTSTRAP_SECRET}"),
            content_type="application/x-www-form-urlencoded")

        assert_oauth_error(response, 400, "invalid_request")

    def test_two_authentication_methods_are_invalid_request(self, client):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials",
                                                "client_secret": BOOTSTRAP_SECRET},
                               headers=basic(BOOTSTRAP_ID, BOOTSTRAP_SECRET))

        assert_oauth_error(response, 400, "invalid_request")

    @pytest.mark.parametrize("header", ["Basic !!!not-base64",
                                        "Basic " + base64.b64encode(b"no-colon").decode(),
                                        "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
    def test_a_malformed_basic_header_is_invalid_request(self, client, header):
        response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                               headers={"Authorization": header})

        assert_oauth_error(response, 400, "invalid_request")

    @pytest.mark.parametrize("client_id, secret", [("a\x00b", "x"), ("x" * 5000, "y"),
                                                   (BOOTSTRAP_ID, "s" * 100_000)])
    def test_hostile_credentials_are_refused_without_a_server_error(self, client, client_id, secret):
        assert_oauth_error(request_token(client, client_id=client_id, secret=secret), 401, "invalid_client")

    def test_a_body_that_is_not_utf8_is_invalid_request(self, client):
        body = b"grant_type=client_credentials&client_id=\xff\xfe&client_secret=x"

        response = client.post(TOKEN_URL, data=body, content_type="application/x-www-form-urlencoded")

        body = assert_oauth_error(response, 400, "invalid_request")
        assert "UTF-8" in body["detail"]

    def test_the_token_endpoint_is_documented_with_its_form(self, client):
        operation = client.get("/openapi.json").get_json()["paths"][TOKEN_URL]["post"]

        assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
        assert operation["security"] == []


class TestBearerTokens:
    def test_a_token_from_the_endpoint_verifies_with_the_published_jwks(self, client):
        token = request_token(client).get_json()["access_token"]

        claims = verify_with_jwks(client, token)

        assert claims["sub"] == BOOTSTRAP_ID
        assert claims["exp"] - claims["iat"] == 3600

    def test_the_jwks_holds_no_private_key(self, client):
        response = client.get(JWKS_URL)

        assert response.status_code == 200
        (key,) = response.get_json()["keys"]
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
        assert "d" not in key

    def test_an_expired_token_is_refused(self, client, signing_key):
        expired = TokenSigner(signing_key, ttl_seconds=-60)  # the key the app signs with

        response = client.get(CLIENTS_URL, headers=bearer(expired.issue(BOOTSTRAP_ID, "admin", None)))

        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"

    def test_a_token_signed_with_another_key_is_refused(self, client):
        forged = TokenSigner(Ed25519PrivateKey.generate()).issue(BOOTSTRAP_ID, "admin", None)

        assert client.get(CLIENTS_URL, headers=bearer(forged)).status_code == 401

    def test_a_token_with_the_key_of_the_app_but_altered_claims_is_refused(self, client):
        token = request_token(client).get_json()["access_token"]
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["role"] = "admin" if claims["role"] != "admin" else "lab_staff"
        altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

        response = client.get("/api/v1/organizations", headers=bearer(f"{header}.{altered}.{signature}"))

        assert response.status_code == 401

    @pytest.mark.parametrize("authorization", ["Bearer garbage", "Bearer a.b.c", "Bearer ", "Basic abc", ""])
    def test_garbage_or_no_token_is_refused(self, client, authorization):
        response = client.get(CLIENTS_URL, headers={"Authorization": authorization})

        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"


class TestApiClients:
    def test_an_admin_creates_an_enterprise_client_whose_secret_works_once_shown(self, client, admin, orgs,
                                                                                 inventory_db):
        response = client.post(CLIENTS_URL, json={"name": "示例氢能 ERP", "role": "enterprise",
                                                  "organization_id": orgs["a"]}, headers=admin)

        assert response.status_code == 201
        assert response.headers["Cache-Control"] == "no-store"
        created = response.get_json()
        assert created["name"] == "示例氢能 ERP"
        assert created["role"] == "enterprise"
        assert created["organization_id"] == orgs["a"]
        assert created["active"] is True
        assert created["created_at"]
        assert response.headers["Location"].endswith(f"/api/v1/clients/{created['client_id']}")
        token = request_token(client, created["client_id"], created["client_secret"]).get_json()
        claims = verify_with_jwks(client, token["access_token"])
        assert claims["sub"] == created["client_id"]
        assert (claims["role"], claims["org"]) == ("enterprise", orgs["a"])
        with inventory_db.Session() as session:
            stored = session.get(ApiClient, created["client_id"])
            assert created["client_secret"] not in stored.secret_hash

    def test_a_partner_client_may_belong_to_a_university(self, client, admin, orgs):
        created = create_client(client, admin, name="示例大学 research group", role="partner",
                                organization_id=orgs["university"])

        assert created["organization_id"] == orgs["university"]

    def test_a_lab_staff_client_needs_no_organization(self, client, admin):
        created = create_client(client, admin, name="lab bench 3", role="lab_staff")

        assert created["organization_id"] is None

    def test_the_secret_is_never_shown_again(self, client, admin):
        created = create_client(client, admin, name="lab bench 3", role="lab_staff")

        listed = client.get(CLIENTS_URL, headers=admin)
        one = client.get(f"{CLIENTS_URL}/{created['client_id']}", headers=admin)

        assert listed.status_code == 200 and one.status_code == 200
        for text in (listed.get_data(as_text=True), one.get_data(as_text=True)):
            assert created["client_secret"] not in text
            assert "secret" not in text
        assert one.get_json()["client_id"] == created["client_id"]

    def test_the_list_is_paginated_and_filtered(self, client, admin, orgs):
        for index in range(3):
            create_client(client, admin, name=f"bench {index}", role="lab_staff")
        create_client(client, admin, name="erp", role="enterprise", organization_id=orgs["a"])

        page = client.get(f"{CLIENTS_URL}?page_size=2&role=lab_staff", headers=admin)
        enterprise = client.get(f"{CLIENTS_URL}?organization_id={orgs['a']}", headers=admin)

        assert [c["name"] for c in page.get_json()] == ["bench 0", "bench 1"]
        assert json.loads(page.headers["X-Pagination"])["total"] == 3
        assert [c["name"] for c in enterprise.get_json()] == ["erp"]
        assert client.get(f"{CLIENTS_URL}?page=99999999999999999999", headers=admin).get_json() == []

    @pytest.mark.parametrize("body, field", [
        ({"name": "erp", "role": "enterprise"}, "organization_id"),
        ({"name": "uni", "role": "partner", "organization_id": None}, "organization_id"),
        ({"name": "erp", "role": "enterprise", "organization_id": "no-such-org"}, "organization_id"),
        ({"name": "erp", "role": "enterprise", "organization_id": "x\x00y"}, "organization_id"),
        ({"name": "erp", "role": "enterprise", "organization_id": "university"}, "organization_id"),
        ({"name": "x", "role": "superuser"}, "role"),
        ({"name": "", "role": "lab_staff"}, "name"),
        ({"name": "bad\x00name", "role": "lab_staff"}, "name"),
        ({"role": "lab_staff"}, "name"),
        ({"name": "x", "role": "lab_staff", "client_secret": "mine"}, "client_secret"),
    ])
    def test_a_bad_client_is_refused_naming_the_field_and_nothing_is_written(self, client, admin, orgs,
                                                                              inventory_db, body, field):
        if body.get("organization_id") == "university":
            body = {**body, "organization_id": orgs["university"]}  # an enterprise client needs an enterprise
        before = client_count(inventory_db)

        response = client.post(CLIENTS_URL, json=body, headers=admin)

        assert response.status_code == 422, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert field in response.get_json()["errors"]
        assert client_count(inventory_db) == before

    def test_an_unknown_client_is_404(self, client, admin):
        assert client.get(f"{CLIENTS_URL}/cl_nobody", headers=admin).status_code == 404
        assert client.get(f"{CLIENTS_URL}/a%00b", headers=admin).status_code == 404
        assert client.get(f"{CLIENTS_URL}/{'x' * 500}", headers=admin).status_code == 404

    def test_a_deactivated_client_gets_no_more_tokens(self, client, admin):
        created = create_client(client, admin, name="old bench", role="lab_staff")

        response = client.delete(f"{CLIENTS_URL}/{created['client_id']}", headers=admin)

        assert response.status_code == 204
        shown = client.get(f"{CLIENTS_URL}/{created['client_id']}", headers=admin).get_json()
        assert shown["active"] is False
        assert_oauth_error(request_token(client, created["client_id"], created["client_secret"]),
                           401, "invalid_client")
        assert client.delete(f"{CLIENTS_URL}/{created['client_id']}", headers=admin).status_code == 204

    def test_an_admin_cannot_deactivate_its_own_client(self, client):
        token = request_token(client).get_json()["access_token"]

        response = client.delete(f"{CLIENTS_URL}/{BOOTSTRAP_ID}", headers=bearer(token))

        assert response.status_code == 409
        assert response.get_json()["code"] == "own_client"
        assert request_token(client).status_code == 200


class TestApiClientRoles:
    @pytest.fixture
    def callers(self, token_for, orgs):
        return {
            "admin": token_for("admin"),
            "lab_staff": token_for("lab_staff"),
            "partner": token_for("partner", orgs["university"]),
            "enterprise": token_for("enterprise", orgs["a"]),
            "nobody": {},
        }

    @pytest.mark.parametrize("caller, status", [("admin", 201), ("lab_staff", 403), ("partner", 403),
                                                ("enterprise", 403), ("nobody", 401)])
    def test_only_an_admin_creates_clients(self, client, callers, caller, status, inventory_db):
        before = client_count(inventory_db)

        response = client.post(CLIENTS_URL, json={"name": "x", "role": "lab_staff"}, headers=callers[caller])

        assert response.status_code == status
        assert client_count(inventory_db) == before + (1 if status == 201 else 0)

    @pytest.mark.parametrize("caller, status", [("admin", 200), ("lab_staff", 403), ("partner", 403),
                                                ("enterprise", 403), ("nobody", 401)])
    def test_only_an_admin_reads_and_revokes_clients(self, client, callers, caller, status):
        assert client.get(CLIENTS_URL, headers=callers[caller]).status_code == status
        assert client.get(f"{CLIENTS_URL}/{BOOTSTRAP_ID}", headers=callers[caller]).status_code == status
        revoke = client.delete(f"{CLIENTS_URL}/{BOOTSTRAP_ID}", headers=callers[caller])
        assert revoke.status_code == (204 if status == 200 else status)
