"""API clients: creation with a one-time secret stored hashed, and the credential check."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from services.inventory.models import ApiClient

# Secrets are 256-bit random strings, not passwords: a fast salted hash is enough and keeps the
# token endpoint fast. pbkdf2 with few iterations is werkzeug's portable choice.
_HASH_METHOD = "pbkdf2:sha256:1000"


def hash_secret(secret: str) -> str:
    return generate_password_hash(secret, method=_HASH_METHOD)


def new_credentials() -> tuple[str, str]:
    return "cl_" + secrets.token_hex(12), "cs_" + secrets.token_urlsafe(32)


def verify_credentials(session: Session, client_id: str, secret: str) -> ApiClient | None:
    client = session.get(ApiClient, client_id)
    if client is None or not client.active:
        # Spend the same time as a real check so that client ids cannot be probed by timing.
        check_password_hash(hash_secret("x"), secret)
        return None
    return client if check_password_hash(client.secret_hash, secret) else None


def ensure_bootstrap_admin(session: Session, client_id: str, secret: str) -> ApiClient:
    """The admin client named by BOOTSTRAP_CLIENT_ID/SECRET exists with that secret."""
    client = session.get(ApiClient, client_id)
    if client is None:
        client = ApiClient(id=client_id, name="bootstrap admin", role="admin", secret_hash=hash_secret(secret))
        session.add(client)
    elif not check_password_hash(client.secret_hash, secret) or client.role != "admin":
        client.secret_hash = hash_secret(secret)
        client.role = "admin"
        client.active = True
    return client
