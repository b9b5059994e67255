"""Configuration read from the environment (contract.md, "Configuration").

Every attribute reads its variable at instantiation, so tests can set the environment and build a
fresh Settings without reloading modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("REFSTD_VAR_DIR", ROOT / "var"))

DEFAULT_PORTS = {"inventory": 8001, "scheduler": 8002, "notifier": 8003}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_flag(name: str, default: bool = False) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def default_database_url(service: str) -> str:
    return f"sqlite:///{VAR_DIR / (service + '.db')}"


@dataclass
class Settings:
    """The settings of one service process."""

    service: str
    database_url: str = ""
    amqp_url: str = field(default_factory=lambda: _env("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F"))
    port: int = 0
    inventory_url: str = field(
        default_factory=lambda: _env("INVENTORY_URL", f"http://127.0.0.1:{_env('INVENTORY_PORT', '8001')}")
    )
    institute_tz: str = field(default_factory=lambda: _env("INSTITUTE_TZ", "Asia/Shanghai"))
    bootstrap_client_id: str | None = field(default_factory=lambda: _env("BOOTSTRAP_CLIENT_ID"))
    bootstrap_client_secret: str | None = field(default_factory=lambda: _env("BOOTSTRAP_CLIENT_SECRET"))
    demo_data: bool = field(default_factory=lambda: env_flag("DEMO_DATA", True))
    # Signing key of the token issuer (inventory). PEM text, or a file created on first start.
    jwt_private_key: str | None = field(default_factory=lambda: _env("JWT_PRIVATE_KEY"))
    jwt_private_key_file: str = field(
        default_factory=lambda: _env("JWT_PRIVATE_KEY_FILE", str(VAR_DIR / "keys" / "token-signing.pem"))
    )
    # Issuer: public keys (PEM blocks) trusted and published beside its own, during a key rotation.
    jwt_trusted_public_keys: str | None = field(default_factory=lambda: _env("JWT_TRUSTED_PUBLIC_KEYS"))
    # Verifying side: PEM public key(s), else fetched from the issuer's JWKS at INVENTORY_URL.
    jwt_public_key: str | None = field(default_factory=lambda: _env("JWT_PUBLIC_KEY"))
    token_ttl_seconds: int = field(default_factory=lambda: int(_env("TOKEN_TTL_SECONDS", "3600")))
    sweep_cron: str = field(default_factory=lambda: _env("SWEEP_CRON", "0 8 * * *"))
    reminder_interval_seconds: int = field(default_factory=lambda: int(_env("REMINDER_INTERVAL_SECONDS", "300")))
    # Notifier: where email goes (smtp://[user:pass@]host:port[?starttls=true] or file:///dir) and from whom.
    mail_url: str = field(default_factory=lambda: _env("MAIL_URL", f"file://{VAR_DIR / 'mail'}"))
    mail_from: str = field(default_factory=lambda: _env("MAIL_FROM", "refstd 计量院通知 <noreply@refstd.example>"))
    # Webhook deliveries to loopback, private or link-local addresses are refused unless this is true.
    webhook_allow_private: bool = field(default_factory=lambda: env_flag("WEBHOOK_ALLOW_PRIVATE", False))
    # Notifier: how long a dispatcher's claim on a batch lasts, per channel. It must outlast the slowest
    # batch, else another worker sends the same rows again meanwhile (50 emails: a hung SMTP server costs
    # two 30 s timeouts, then the rest fail at once; 20 webhooks, 8 at a time, 3 s + 10 s each at most).
    # It is also how long the unsent rows of a worker that died mid-batch wait for another worker.
    email_claim_seconds: float = field(default_factory=lambda: float(_env("NOTIFIER_EMAIL_CLAIM_SECONDS", "120")))
    webhook_claim_seconds: float = field(
        default_factory=lambda: float(_env("NOTIFIER_WEBHOOK_CLAIM_SECONDS", "300")))
    # Workers: sent outbox rows and inbox rows older than this are deleted (shared/messaging/retention.py).
    message_retention_days: float = field(default_factory=lambda: float(_env("MESSAGE_RETENTION_DAYS", "7")))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))
    log_json: bool = field(default_factory=lambda: env_flag("LOG_JSON", False))

    def __post_init__(self) -> None:
        upper = self.service.upper()
        if not self.database_url:
            self.database_url = _env(f"{upper}_DATABASE_URL", default_database_url(self.service))
        if not self.port:
            self.port = int(_env(f"{upper}_PORT", str(DEFAULT_PORTS.get(self.service, 8000))))
