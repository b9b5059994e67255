"""Rotating the token-signing key without refusing anyone (docs/operations.md): the issuer trusts and
publishes the keys of JWT_TRUSTED_PUBLIC_KEYS beside its own, and a verifier fetching the JWKS picks
the key a token names and fetches again when it meets a new one."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.inventory.app import create_app
from services.inventory.manage import prepare_database
from shared.auth import TokenSigner, TokenVerifier, load_public_keys, private_pem, public_pem
from shared.config import Settings
from shared.db import Database
from shared.errors import Problem


class JwksServer:
    """A real HTTP server answering the JWKS of the signers it is given, counting the fetches."""

    def __init__(self) -> None:
        self.signers: list[TokenSigner] = []
        self.fetches = 0
        self.failing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server protocol
                server.fetches += 1
                if server.failing:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": [k for s in server.signers for k in s.jwks()["keys"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/api/v1/auth/jwks.json"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.close()


def test_a_verifier_fetches_the_jwks_again_for_a_new_key_and_keeps_the_old_one(jwks_server):
    old, new = TokenSigner(Ed25519PrivateKey.generate()), TokenSigner(Ed25519PrivateKey.generate())
    jwks_server.signers = [old]
    verifier = TokenVerifier(jwks_url=jwks_server.url, refetch_seconds=0)
    assert verifier.verify(old.issue("c1", "admin", None)).client_id == "c1"
    assert jwks_server.fetches == 1

    jwks_server.signers = [new, old]  # the issuer now signs with the new key and still trusts the old
    assert verifier.verify(new.issue("c2", "lab_staff", None)).client_id == "c2"
    assert verifier.verify(old.issue("c3", "admin", None)).client_id == "c3"
    assert jwks_server.fetches == 2


def test_unknown_keys_do_not_make_the_verifier_fetch_on_every_request(jwks_server):
    known, stranger = TokenSigner(Ed25519PrivateKey.generate()), TokenSigner(Ed25519PrivateKey.generate())
    jwks_server.signers = [known]
    verifier = TokenVerifier(jwks_url=jwks_server.url, refetch_seconds=300)
    verifier.verify(known.issue("c1", "admin", None))
    for _ in range(5):
        with pytest.raises(Problem) as refused:
            verifier.verify(stranger.issue("intruder", "admin", None))
        assert refused.value.status == 401
    assert jwks_server.fetches == 1  # within refetch_seconds of the last fetch an unknown kid fetches nothing


def test_a_key_the_issuer_stopped_publishing_stops_being_trusted_once_the_keys_are_old(jwks_server):
    old, new = TokenSigner(Ed25519PrivateKey.generate()), TokenSigner(Ed25519PrivateKey.generate())
    jwks_server.signers = [new, old]
    verifier = TokenVerifier(jwks_url=jwks_server.url, max_age=0.2)
    old_token = old.issue("c1", "admin", None)
    assert verifier.verify(old_token).client_id == "c1"
    jwks_server.signers = [new]  # the rotation's last step
    time.sleep(0.3)
    with pytest.raises(Problem) as refused:
        verifier.verify(old_token)
    assert refused.value.status == 401
    assert verifier.verify(new.issue("c2", "admin", None)).client_id == "c2"


def test_while_the_issuer_is_down_known_keys_still_verify_and_unknown_ones_are_401(jwks_server):
    known, stranger = TokenSigner(Ed25519PrivateKey.generate()), TokenSigner(Ed25519PrivateKey.generate())
    jwks_server.signers = [known]
    verifier = TokenVerifier(jwks_url=jwks_server.url, refetch_seconds=300, max_age=2)
    verifier.verify(known.issue("c1", "admin", None))
    jwks_server.failing = True
    time.sleep(2.1)  # the keys are old: the next token makes the verifier try the issuer again
    assert verifier.verify(known.issue("c2", "admin", None)).client_id == "c2"
    for _ in range(3):
        with pytest.raises(Problem) as refused:
            verifier.verify(stranger.issue("intruder", "admin", None))
        assert refused.value.status == 401
    assert jwks_server.fetches == 2  # the first fetch and one failed attempt, not one per request


def test_without_any_key_yet_an_unreachable_issuer_is_503(jwks_server):
    jwks_server.failing = True
    verifier = TokenVerifier(jwks_url=jwks_server.url)
    with pytest.raises(Problem) as refused:
        verifier.verify(TokenSigner(Ed25519PrivateKey.generate()).issue("c1", "admin", None))
    assert refused.value.status == 503


def test_several_pem_keys_are_all_trusted_and_nothing_else():
    a, b, c = (TokenSigner(Ed25519PrivateKey.generate()) for _ in range(3))
    pem = public_pem(a.public_keys()[0]) + public_pem(b.public_keys()[0])
    assert len(load_public_keys(pem)) == 2
    verifier = TokenVerifier(public_key_pem=pem)
    assert verifier.verify(a.issue("a", "admin", None)).client_id == "a"
    assert verifier.verify(b.issue("b", "admin", None)).client_id == "b"
    with pytest.raises(Problem) as refused:
        verifier.verify(c.issue("c", "admin", None))
    assert refused.value.status == 401
    with pytest.raises(ValueError):
        load_public_keys("not a key")


def test_the_inventory_accepts_and_publishes_the_previous_key_during_a_rotation(
        db_backend, migrated_database_factory):
    previous, current = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    database = Database(migrated_database_factory(db_backend, "inventory", prepare_database))
    settings = Settings("inventory", database_url=database.url)
    settings.jwt_private_key = private_pem(current)
    settings.jwt_trusted_public_keys = public_pem(previous)
    client = create_app(settings, database).test_client()
    try:
        kids = [k["kid"] for k in client.get("/api/v1/auth/jwks.json").get_json()["keys"]]
        assert kids == [TokenSigner(current).kid, TokenSigner(previous).kid]  # the current key first
        for key in (previous, current):
            token = TokenSigner(key).issue("staff", "lab_staff", None)
            assert client.get("/api/v1/standards", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        stranger = TokenSigner(Ed25519PrivateKey.generate()).issue("staff", "lab_staff", None)
        assert client.get("/api/v1/standards", headers={"Authorization": f"Bearer {stranger}"}).status_code == 401
    finally:
        database.dispose()
