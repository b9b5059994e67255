"""What the end-to-end stories do to the running system, through its public APIs as an integrator would:
API clients for each role (created by an admin, tokens from the token endpoint), organizations,
standards, CSV imports, and the waits that follow an event through relay, broker and consumers.

Where a wait needs to see inside (a sweep that ran at a worker's start, an outbox not yet relayed,
a queue not yet drained) it reads the services' own databases and ``rabbitmqctl``, never changes them.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess

import psycopg

from scripts.system import System
from services.inventory.domain import credit_code_check_char
from tests.e2e.conftest import Api, token
from tests.e2e.receivers import wait_for

# Queues whose messages are still on their way somewhere (the audit trail and the DLQs are ends).
_END_QUEUES = ("notifier.audit",)


def valid_credit_code(body17: str) -> str:
    """A unified social credit code (GB 32100-2015): the 17 characters given and their check character."""
    return body17 + credit_code_check_char(body17)


# -- clients -----------------------------------------------------------------------------------------

def new_client(admin: Api, role: str, organization_id: str | None = None, *, replica: int = 1) -> Api:
    """An API client of ``role`` created by an admin, calling with the token it got for its credentials."""
    response = admin.post("inventory", "/clients", json={
        "name": f"e2e {role}", "role": role, "organization_id": organization_id})
    assert response.status_code == 201, response.text
    client = response.json()
    return Api(admin.system, token(admin.system, client["client_id"], client["client_secret"]), replica)


def on_every_replica(api: Api, service: str) -> list[Api]:
    """The same caller (same token), once per web replica of ``service``."""
    bearer = api.http.headers["Authorization"].removeprefix("Bearer ")
    return [Api(api.system, bearer, replica) for replica in range(1, len(api.system.urls(service)) + 1)]


def created(response, what: str) -> dict:
    assert response.status_code == 201, f"{what}: {response.status_code} {response.text}"
    return response.json()


def total(api: Api, service: str, path: str, **params) -> int:
    """How many items a list endpoint has (its X-Pagination total), as the caller sees them."""
    response = api.get(service, path, params={**params, "page_size": 1})
    assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
    return json.loads(response.headers["X-Pagination"])["total"]


# -- inventory -----------------------------------------------------------------------------------------

def register_organization(api: Api, **fields) -> dict:
    return created(api.post("inventory", "/organizations", json=fields), "register organization")


def register_standard(api: Api, code: str, custodian_email: str, issued_on: str, **fields) -> dict:
    """A public, bookable standard in service with a current assessment certificate (so it is usable)."""
    body = {"code": code, "name": "活塞式压力计标准装置", "name_en": "Piston gauge standard",
            "discipline": "mechanical", "measurand": "压力",
            "range": {"min": 0.1, "max": 60, "unit": "MPa"}, "uncertainty": "U = 0.02 %, k = 2",
            "assessment_certificate": {"number": f"[2024]鲁量标淄证字第{code}号", "issued_on": issued_on},
            "custodian": {"name": "李工", "email": custodian_email}, "lab": "压力室",
            "public": True, "bookable": True, "recovery_minutes": 30, **fields}
    return created(api.post("inventory", "/standards", json=body), "register standard")


CSV_COLUMNS = ("name", "category", "serial_number", "interval_months", "manufacturer", "model", "regulation",
               "mandatory", "last_verified_on", "location")


def instruments_csv(rows: list[dict]) -> bytes:
    """The import file as a spreadsheet exports it: UTF-8 with a BOM, a header row, blank cells for none."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if row.get(name) is None else str(row[name]) for name in CSV_COLUMNS})
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def import_instruments(api: Api, organization_id: str, rows: list[dict]):
    return api.post("inventory", "/instruments/import", params={"organization_id": organization_id},
                    files={"file": ("器具清单.csv", instruments_csv(rows), "text/csv")})


# -- waiting -----------------------------------------------------------------------------------------

def wait(system: System, condition, timeout: float, message: str, interval: float = 0.25):
    """``wait_for`` whose failure carries the tail of every process's log."""
    try:
        return wait_for(condition, timeout, interval, message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{system.logs()}") from None


def _scalar(system: System, service: str, sql: str, params: tuple = ()) -> int:
    with psycopg.connect(system.env[f"{service.upper()}_DATABASE_URL"], connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchone()[0]


def sweeps_run(system: System, trigger: str) -> int:
    """How many due sweeps the scheduler recorded with this trigger (``startup``, ``api``, ``cron``)."""
    return _scalar(system, "scheduler", "SELECT count(*) FROM sweep_runs WHERE trigger = %s", (trigger,))


def wait_for_startup_sweeps(system: System, timeout: float = 60) -> None:
    """Every scheduler worker sweeps once shortly after it starts; wait until each has, so that the story's
    own sweeps are the ones that notice what the story registers."""
    workers = len(system.of("scheduler-worker"))
    wait(system, lambda: sweeps_run(system, "startup") >= workers, timeout,
         f"the startup sweep of {workers} scheduler worker(s)", interval=0.5)


def _unsent_events(system: System) -> int:
    return sum(_scalar(system, service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
               for service in ("inventory", "scheduler", "notifier"))


def queue_depths(system: System) -> dict[str, int]:
    """Ready plus unacknowledged messages of every queue of the system's vhost."""
    result = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", system.vhost, "--no-table-headers",
                             "name", "messages_ready", "messages_unacknowledged"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    depths = {}
    for line in result.stdout.splitlines():
        name, ready, unacked = line.split()
        depths[name] = int(ready) + int(unacked)
    return depths


def _queued_messages(system: System) -> int:
    """Messages still on their way: in a work or retry queue, or being handled."""
    return sum(depth for name, depth in queue_depths(system).items()
               if name not in _END_QUEUES and not name.endswith(".dlq"))


def _undelivered_notifications(admin: Api) -> int:
    """Notifications still to be sent: pending, or failed and waiting for their next attempt."""
    return sum(total(admin, "notifier", "/notifications", status=status) for status in ("pending", "failed"))


def settle(admin: Api, timeout: float = 60) -> None:
    """Wait until nothing is on its way: every event relayed, every queue drained, every notification
    delivered (or given up). Checked in the order events flow, twice in a row, so nothing slips between."""
    system = admin.system

    def quiet() -> bool:
        return (_unsent_events(system) == 0 and _queued_messages(system) == 0
                and _undelivered_notifications(admin) == 0)

    wait(system, lambda: quiet() and quiet(), timeout, "every event relayed, consumed and delivered",
         interval=0.3)


def assert_nothing_lost(admin: Api) -> None:
    """No message was dead-lettered and no notification given up on: every event did what it should."""
    dead_letters = {name: depth for name, depth in queue_depths(admin.system).items()
                    if name.endswith(".dlq") and depth}
    assert not dead_letters, f"dead-lettered: {dead_letters}\n{admin.system.logs()}"
    dead = admin.get("notifier", "/notifications", params={"status": "dead"}).json()
    assert not dead, dead
