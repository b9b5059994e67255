"""The whole system as real processes (scripts/system.py, from the Procfile as `make run` starts it), on
fresh PostgreSQL databases and a fresh RabbitMQ vhost, with email to an SMTP server in this process and a
webhook receiver in this process.

``system`` is module-scoped and parametrized: every test module that uses it runs once against one
process of each kind and once against two of each ("replicas"). A module's tests share its system and
run in order on one xdist worker (``xdist_group``), as the steps of one story.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid

import pytest
import requests

from scripts.system import System
from shared.auth import public_pem
from tests.e2e.receivers import SmtpSink, WebhookReceiver

BOOTSTRAP_ID = "e2e-admin"


def pytest_collection_modifyitems(items):
    # A module's tests are the steps of one story on one system: keep them on one xdist worker, in order.
    # `make test` runs pytest with --dist loadfile (a file's tests on one worker, in order): on pytest 9.2
    # --dist loadgroup silently ignores xdist_group marks (pytest-dev/pytest-xdist#1386).
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group(f"e2e-{item.path.stem}"))


def _rabbitmqctl(*args: str) -> None:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"`rabbitmqctl {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}. "
                    "Start RabbitMQ with `rabbitmq-server -detached`.", pytrace=False)


@pytest.fixture(scope="module", params=[1, 2], ids=["single", "replicas"])
def replicas(request) -> int:
    """How many processes of each kind the module's system runs: it runs once with each."""
    return request.param


@pytest.fixture(scope="module")
def vhost(replicas):
    """A fresh vhost for one system (depending on ``replicas`` makes it one per system); (name, AMQP URL).
    Deleted afterwards."""
    name = f"refstd-e2e-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name, f"amqp://guest:guest@127.0.0.1:5672/{name}"
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def smtp():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def webhooks():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def system(replicas, vhost, smtp, postgres_database_factory, signing_key, signing_key_pem, tmp_path_factory):
    """Every web and worker process of the Procfile, ``replicas`` of each."""
    var = tmp_path_factory.mktemp("e2e-var")
    env = {
        "AMQP_URL": vhost[1],
        "REFSTD_VAR_DIR": str(var),
        "DEMO_DATA": "0",
        "JWT_PRIVATE_KEY": signing_key_pem,
        "JWT_PUBLIC_KEY": public_pem(signing_key),
        "BOOTSTRAP_CLIENT_ID": BOOTSTRAP_ID,
        "BOOTSTRAP_CLIENT_SECRET": secrets.token_urlsafe(24),
        "MAIL_URL": smtp.url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        # What a killed notifier worker had claimed goes to another worker after seconds, not minutes
        # (the receivers here answer at once, so a batch takes far less).
        "NOTIFIER_EMAIL_CLAIM_SECONDS": "10",
        "NOTIFIER_WEBHOOK_CLAIM_SECONDS": "10",
        # Sweeps run when a test asks (POST /sweeps) and once at each worker's start, never on the clock.
        "SWEEP_CRON": "0 3 1 1 *",
        "LOG_LEVEL": "INFO",
    }
    for service in ("inventory", "scheduler", "notifier"):
        env[f"{service.upper()}_DATABASE_URL"] = postgres_database_factory(f"e2e_{service}")
    # One gunicorn worker per web process with replicas, so two processes still fit two cores.
    system = System(env, var / "logs", replicas=replicas, web_workers=2 if replicas == 1 else 1)
    system.migrate()
    try:
        system.start()
    except Exception:
        system.stop()
        raise
    system.bootstrap = (BOOTSTRAP_ID, env["BOOTSTRAP_CLIENT_SECRET"])
    system.vhost = vhost[0]
    yield system
    system.stop()


class Api:
    """A client of the running system with one role's token; ``get``/``post``/... take (service, path)."""

    def __init__(self, system: System, token: str | None, replica: int = 1) -> None:
        self.system = system
        self.replica = replica
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def url(self, service: str, path: str) -> str:
        replicas = self.system.urls(service)
        return replicas[(self.replica - 1) % len(replicas)] + "/api/v1" + path

    def request(self, method: str, service: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url(service, path), **kwargs)

    def get(self, service, path, **kw):
        return self.request("GET", service, path, **kw)

    def post(self, service, path, **kw):
        return self.request("POST", service, path, **kw)

    def put(self, service, path, **kw):
        return self.request("PUT", service, path, **kw)

    def patch(self, service, path, **kw):
        return self.request("PATCH", service, path, **kw)

    def delete(self, service, path, **kw):
        return self.request("DELETE", service, path, **kw)


def token(system: System, client_id: str, secret: str) -> str:
    """A token from the inventory's token endpoint (client credentials), as any client gets one."""
    response = requests.post(system.url("inventory") + "/api/v1/auth/token", timeout=30,
                             data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def as_admin(system) -> Api:
    return Api(system, token(system, *system.bootstrap))
