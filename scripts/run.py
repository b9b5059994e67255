"""`make run`: prepare the databases, load the sample data, then start every process of the Procfile."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from shared.config import ROOT, VAR_DIR, Settings, env_flag
from shared.messaging.connection import broker_reachable, redact_url

SERVICES = ("inventory", "scheduler", "notifier")


def bootstrap_credentials() -> tuple[str, str]:
    """BOOTSTRAP_CLIENT_ID/SECRET from the environment, else `admin` and a secret kept in var/."""
    client_id = os.environ.get("BOOTSTRAP_CLIENT_ID") or "admin"
    secret = os.environ.get("BOOTSTRAP_CLIENT_SECRET")
    if not secret:
        path = VAR_DIR / "bootstrap-secret"
        if not path.exists():
            VAR_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        secret = path.read_text().strip()
    return client_id, secret


def prepare(service: str) -> str:
    module = __import__(f"services.{service}.manage", fromlist=["prepare"])
    return module.prepare(Settings(service), load_demo=env_flag("DEMO_DATA", True))


def main() -> int:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    amqp_url = os.environ.get("AMQP_URL", Settings("inventory").amqp_url)
    if not broker_reachable(amqp_url):
        print(f"RabbitMQ is not reachable at {redact_url(amqp_url)}: start it with `rabbitmq-server -detached` "
              "(or set AMQP_URL).", file=sys.stderr)
        return 1
    client_id, secret = bootstrap_credentials()
    os.environ["BOOTSTRAP_CLIENT_ID"], os.environ["BOOTSTRAP_CLIENT_SECRET"] = client_id, secret
    for service in SERVICES:
        print(f"{service}: {prepare(service)}")

    inventory = Settings("inventory")
    print()
    print("refstd is starting. API docs:")
    for service in SERVICES:
        port = Settings(service).port
        print(f"  {service:10} http://127.0.0.1:{port}/docs   (OpenAPI: http://127.0.0.1:{port}/openapi.json)")
    print(f"Bootstrap admin: client_id={client_id} client_secret={secret}")
    print(f"  token: curl -s -d grant_type=client_credentials -u {client_id}:{secret} "
          f"http://127.0.0.1:{inventory.port}/api/v1/auth/token")
    mail_url = Settings("notifier").mail_url
    if mail_url.startswith("file://"):
        print(f"Email is written as .eml files to {mail_url.removeprefix('file://')} (MAIL_URL to change).")
    print("Stop with Ctrl-C.\n", flush=True)
    honcho = Path(sys.executable).with_name("honcho")
    os.chdir(ROOT)
    os.execv(str(honcho), [str(honcho), "start", "-f", str(ROOT / "Procfile")])


if __name__ == "__main__":
    raise SystemExit(main())
