"""Bearer tokens: EdDSA-signed JWTs issued by the inventory, verified anywhere with the public key.

The issuing side holds the private key (``TokenSigner``); the verifying side needs only the public
key (``TokenVerifier``), given as PEM or fetched once from the issuer's JWKS.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import g, request

from shared.errors import Problem

ROLES = ("admin", "lab_staff", "enterprise", "partner")
ISSUER = "refstd-inventory"
AUDIENCE = "refstd"
ALGORITHM = "EdDSA"
JWKS_PATH = "/api/v1/auth/jwks.json"
BEARER_SECURITY = [{"bearerAuth": []}]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API client, its role and its organization (None for the institute)."""

    client_id: str
    role: str
    organization_id: str | None

    @property
    def is_staff(self) -> bool:
        return self.role in ("admin", "lab_staff")


def load_or_create_private_key(pem: str | None, path: str) -> Ed25519PrivateKey:
    """The signing key from PEM text, else from ``path``, created there (mode 0600) on first start."""
    if pem:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    file = Path(path)
    if file.exists():
        return serialization.load_pem_private_key(file.read_bytes(), password=None)
    key = Ed25519PrivateKey.generate()
    file.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    try:
        os.link(tmp, file)  # atomic and refuses to overwrite: of processes starting at once, one key wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return serialization.load_pem_private_key(file.read_bytes(), password=None)


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class TokenSigner:
    def __init__(self, private_key: Ed25519PrivateKey, ttl_seconds: int = 3600) -> None:
        self._key = private_key
        self.ttl_seconds = ttl_seconds
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key()))
        self.kid = jwk["x"][:16]
        self.public_jwk = {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def issue(self, client_id: str, role: str, organization_id: str | None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "role": role, "org": organization_id,
                  "iat": now, "nbf": now, "exp": now + self.ttl_seconds}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}


class TokenVerifier:
    """Verifies tokens with a public key given as PEM, or fetched lazily from the issuer's JWKS URL."""

    def __init__(self, public_key_pem: str | None = None, jwks_url: str | None = None) -> None:
        if not public_key_pem and not jwks_url:
            raise ValueError("a public key or a JWKS URL is needed to verify tokens")
        self._key = serialization.load_pem_public_key(public_key_pem.encode()) if public_key_pem else None
        self._jwks_url = jwks_url
        self._lock = threading.Lock()

    def _public_key(self):
        if self._key is None:
            with self._lock:
                if self._key is None:
                    response = requests.get(self._jwks_url, timeout=5)
                    response.raise_for_status()
                    jwk = response.json()["keys"][0]
                    self._key = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
        return self._key

    def verify(self, token: str) -> Principal:
        try:
            key = self._public_key()
        except (requests.RequestException, KeyError, ValueError) as exc:
            raise Problem(503, f"The token issuer's public key could not be fetched: {exc}") from exc
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise Problem(401, f"The bearer token is not valid: {exc}.",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
        role = claims.get("role")
        if role not in ROLES:
            raise Problem(401, "The bearer token carries no known role.")
        return Principal(client_id=claims["sub"], role=role, organization_id=claims.get("org"))


def verifier_for(settings) -> TokenVerifier:
    """A verifying service's verifier: JWT_PUBLIC_KEY if given, else the issuer's JWKS at INVENTORY_URL."""
    if settings.jwt_public_key:
        return TokenVerifier(public_key_pem=settings.jwt_public_key)
    return TokenVerifier(jwks_url=settings.inventory_url.rstrip("/") + JWKS_PATH)


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate() -> Principal:
    """The caller of this request (401 when there is no valid token)."""
    if "principal" in g:
        return g.principal
    token = _bearer_token()
    if token is None:
        raise Problem(401, "A bearer token is required (POST /api/v1/auth/token on the inventory).")
    from flask import current_app

    g.principal = current_app.extensions["refstd.token_verifier"].verify(token)
    return g.principal


def current_principal() -> Principal:
    return authenticate()


def require(*roles: str):
    """Decorator for a view: authenticated, and (if roles are given) one of those roles, else 403.

    Put it above flask-smorest's decorators so that the token is checked before the body is read.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            if roles and principal.role not in roles:
                raise Problem(403, f"This action needs one of the roles: {', '.join(roles)}.")
            return view(*args, **kwargs)

        apidoc = dict(getattr(view, "_apidoc", {}))
        manual = dict(apidoc.get("manual_doc", {}))
        manual["security"] = BEARER_SECURITY
        if roles:
            manual["x-roles"] = list(roles)
        apidoc["manual_doc"] = manual
        wrapper._apidoc = apidoc
        return wrapper

    return decorator


def same_organization_or_404(principal: Principal, organization_id: str | None, what: str) -> None:
    """Enterprise clients see only their own organization: anything else is 'not found'."""
    if principal.role == "enterprise" and (
            organization_id is None or str(organization_id) != principal.organization_id):
        raise Problem(404, f"No such {what}.")
