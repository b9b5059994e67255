"""The whole system as real processes (scripts/system.py, from the Procfile as `make run` starts it), on
fresh PostgreSQL databases and a fresh RabbitMQ vhost, with email to an SMTP server in this process and a
webhook receiver in this process.

``system`` is module-scoped and parametrized: every test module that uses it runs once against one
process of each kind and once against two of each ("replicas"). A module's tests share its system and
run in order, as the steps of one story; `make test` runs these tests on their own, one at a time
(``pytest -m e2e``), after the rest.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from scripts.system import System
from shared.auth import public_pem
from tests.e2e.receivers import SmtpSink, WebhookReceiver
from tests.support import broker_vhost

BOOTSTRAP_ID = "e2e-admin"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


class SystemUnderTest(System):
    """Every process of the Procfile (:class:`scripts.system.System`), with what the tests reach it by
    besides its APIs:

    - ``bootstrap``: the bootstrap admin client's (id, secret), as an operator configures it;
    - ``vhost`` and ``amqp_url``: the broker vhost the system runs on;
    - ``database(service)``: a read-only look at a service's database over ONE autocommit connection kept
      until ``stop()``, so that polling opens no new connections (PostgreSQL's 100 connections are
      shared with every other test run on the machine).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, *, bootstrap: tuple[str, str], vhost: str,
                 **kwargs) -> None:
        super().__init__(env, log_dir, **kwargs)
        self.bootstrap = bootstrap
        self.vhost = vhost
        self.amqp_url = env["AMQP_URL"]
        self._databases: dict[str, psycopg.Connection] = {}
        self._lock = threading.Lock()

    def database(self, service: str) -> psycopg.Connection:
        with self._lock:
            connection = self._databases.get(service)
            if connection is None or connection.closed or connection.broken:
                connection = psycopg.connect(self.env[f"{service.upper()}_DATABASE_URL"], autocommit=True,
                                             connect_timeout=5)
                self._databases[service] = connection
            return connection

    def stop(self) -> None:
        with self._lock:
            for connection in self._databases.values():
                connection.close()
            self._databases.clear()
        super().stop()


@pytest.fixture(scope="module", params=[1, 2], ids=["single", "replicas"])
def replicas(request) -> int:
    """How many processes of each kind the module's system runs: it runs once with each."""
    return request.param


@pytest.fixture(scope="module")
def vhost(replicas) -> str:
    """A fresh vhost for one system (depending on ``replicas`` makes it one per system); its AMQP URL.
    Deleted afterwards."""
    with broker_vhost(f"refstd-e2e-{uuid.uuid4().hex[:8]}") as url:
        yield url


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
        "AMQP_URL": vhost,
        "REFSTD_VAR_DIR": str(var),
        "DEMO_DATA": "0",
        "JWT_PRIVATE_KEY": signing_key_pem,
        "JWT_PUBLIC_KEY": public_pem(signing_key),
        "BOOTSTRAP_CLIENT_ID": BOOTSTRAP_ID,
        "BOOTSTRAP_CLIENT_SECRET": secrets.token_urlsafe(24),
        "MAIL_URL": smtp.url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        # What a killed notifier worker had claimed goes to another worker after half a minute, not two.
        # Not less: a batch still being sent when its claim runs out is claimed and sent again by the other
        # worker, and on a loaded machine a batch (to receivers that answer at once) can take 10 s.
        "NOTIFIER_EMAIL_CLAIM_SECONDS": "30",
        "NOTIFIER_WEBHOOK_CLAIM_SECONDS": "30",
        # Sweeps run when a test asks (POST /sweeps) and once at each worker's start, never on the clock.
        "SWEEP_CRON": "0 3 1 1 *",
        "LOG_LEVEL": "INFO",
    }
    for service in ("inventory", "scheduler", "notifier"):
        env[f"{service.upper()}_DATABASE_URL"] = postgres_database_factory(f"e2e_{service}")
    # One gunicorn worker per web process with replicas, so two processes still fit two cores.
    system = SystemUnderTest(env, var / "logs", replicas=replicas, web_workers=2 if replicas == 1 else 1,
                             bootstrap=(BOOTSTRAP_ID, env["BOOTSTRAP_CLIENT_SECRET"]),
                             vhost=vhost.rsplit("/", 1)[1])
    system.migrate()
    try:
        system.start()
    except Exception:
        system.stop()
        raise
    yield system
    system.stop()


class Api:
    """A client of the running system with one role's token; ``get``/``post``/... take (service, path).

    One ``requests.Session`` each: use an Api from one thread at a time.
    """

    def __init__(self, system: SystemUnderTest, token: str | None, replica: int = 1) -> None:
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


def token(system: SystemUnderTest, client_id: str, secret: str) -> str:
    """A token from the inventory's token endpoint (client credentials), as any client gets one."""
    response = requests.post(system.url("inventory") + "/api/v1/auth/token", timeout=30,
                             data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def as_admin(system) -> Api:
    return Api(system, token(system, *system.bootstrap))
