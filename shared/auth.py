"""Bearer tokens: EdDSA-signed JWTs issued by the inventory, verified anywhere with the public key.

The issuing side holds the private key (``TokenSigner``); the verifying side needs only public keys
(``TokenVerifier``), given as PEM or fetched from the issuer's JWKS. Every token names its key (``kid``),
so a signing key can be rotated without refusing anyone: the issuer publishes and trusts the keys in
``JWT_TRUSTED_PUBLIC_KEYS`` beside its own, and a verifier that meets an unknown ``kid`` fetches the
JWKS again (docs/operations.md, "The token-signing key").
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import g, request

from shared.errors import Problem

log = logging.getLogger(__name__)

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
    data = private_pem(key).encode()
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


def private_pem(key: Ed25519PrivateKey) -> str:
    """The private key as unencrypted PKCS#8 PEM (what JWT_PRIVATE_KEY and the key file hold)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def load_public_keys(pem_text: str | None) -> list[Ed25519PublicKey]:
    """Every public key in ``pem_text`` (one PEM block or several, one after the other)."""
    blocks = _PEM_BLOCK.findall(pem_text or "")
    if pem_text and pem_text.strip() and not blocks:
        raise ValueError("no PEM public key (-----BEGIN PUBLIC KEY-----) found")
    return [serialization.load_pem_public_key(block.encode()) for block in blocks]


def public_jwk(public_key: Ed25519PublicKey) -> dict:
    """The key as a JWK, with its ``kid`` (the first 16 characters of its ``x``)."""
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public_key))
    return {**jwk, "kid": jwk["x"][:16], "alg": ALGORITHM, "use": "sig"}


def key_id(public_key: Ed25519PublicKey) -> str:
    return public_jwk(public_key)["kid"]


class TokenSigner:
    """Issues tokens with the current key; ``trusted`` are further public keys (the previous or the next
    signing key during a rotation) that the JWKS publishes beside the current one."""

    def __init__(self, private_key: Ed25519PrivateKey, ttl_seconds: int = 3600,
                 trusted: Iterable[Ed25519PublicKey] = ()) -> None:
        self._key = private_key
        self.ttl_seconds = ttl_seconds
        self.public_jwk = public_jwk(private_key.public_key())
        self.kid = self.public_jwk["kid"]
        self.trusted_jwks = [jwk for jwk in map(public_jwk, trusted) if jwk["kid"] != self.kid]

    def issue(self, client_id: str, role: str, organization_id: str | None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "role": role, "org": organization_id,
                  "iat": now, "nbf": now, "exp": now + self.ttl_seconds}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk, *self.trusted_jwks]}

    def public_keys(self) -> list[Ed25519PublicKey]:
        """Every key a token of this issuer may be signed with: the current one first."""
        return [self._key.public_key(), *(jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(k))
                                          for k in self.trusted_jwks)]


class TokenVerifier:
    """Verifies tokens with the key their ``kid`` names: from the keys given, or from the issuer's JWKS.

    With a JWKS URL the keys are fetched at the first token; again when a token names a key not seen yet
    (a rotation), at most once per ``refetch_seconds`` so that forged ``kid`` values cannot make the
    service hammer the issuer; and again once they are ``max_age`` seconds old (the JWKS's own
    Cache-Control), so that a key the issuer stopped publishing stops being trusted. When the issuer
    cannot be reached, the keys already fetched stay in use.
    """

    def __init__(self, public_key_pem: str | None = None, jwks_url: str | None = None, *,
                 public_keys: Iterable[Ed25519PublicKey] = (), refetch_seconds: float = 30.0,
                 max_age: float = 300.0) -> None:
        keys = [*load_public_keys(public_key_pem), *public_keys]
        if not keys and not jwks_url:
            raise ValueError("a public key or a JWKS URL is needed to verify tokens")
        self._keys: dict[str, Ed25519PublicKey] | None = {key_id(k): k for k in keys} if keys else None
        self._jwks_url = jwks_url
        self._refetch_seconds = refetch_seconds
        self._max_age = max_age
        self._fetched_at = float("-inf")  # the last attempt, successful or not
        self._lock = threading.Lock()

    def _fetch(self) -> dict[str, Ed25519PublicKey]:
        response = requests.get(self._jwks_url, timeout=5)
        response.raise_for_status()
        keys = {}
        for jwk in response.json()["keys"]:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                keys[jwk.get("kid") or jwk["x"][:16]] = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
        if not keys:
            raise ValueError("the JWKS holds no Ed25519 key")
        return keys

    def _key_for(self, kid: str | None):
        """The key named ``kid`` (a token without one: the only key, if there is only one)."""
        with self._lock:
            if self._jwks_url is not None:
                age = time.monotonic() - self._fetched_at
                if (self._keys is None or age >= self._max_age
                        or (kid not in self._keys and age >= self._refetch_seconds)):
                    self._fetched_at = time.monotonic()
                    try:
                        self._keys = self._fetch()
                    except (requests.RequestException, KeyError, ValueError, TypeError):
                        if self._keys is None:
                            raise
                        log.warning("the token issuer's JWKS could not be fetched; keeping the keys known")
            keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def verify(self, token: str) -> Principal:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from exc
        try:
            key = self._key_for(kid if isinstance(kid, str) else None)
        except (requests.RequestException, KeyError, ValueError, TypeError) as exc:
            raise Problem(503, f"The token issuer's public key could not be fetched: {exc}") from exc
        if key is None:
            raise _invalid("it is signed with a key this service does not trust (kid)")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from exc
        role = claims.get("role")
        if role not in ROLES:
            raise Problem(401, "The bearer token carries no known role.")
        return Principal(client_id=claims["sub"], role=role, organization_id=claims.get("org"))


def _invalid(reason) -> Problem:
    return Problem(401, f"The bearer token is not valid: {reason}.",
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def verifier_for(settings) -> TokenVerifier:
    """A verifying service's verifier: the keys in JWT_PUBLIC_KEY if given, else the issuer's JWKS at
    INVENTORY_URL."""
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
