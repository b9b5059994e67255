"""What the end-to-end stories do to the running system, through its public APIs as an integrator would:
API clients for each role (created by an admin, tokens from the token endpoint), organizations,
standards, CSV imports, and the waits that follow an event through relay, broker and consumers.

Where a wait needs to see inside (a sweep that ran at a worker's start, an outbox not yet relayed,
a queue not yet drained) it reads the services' own databases (``SystemUnderTest.database``) and the
broker (passive declares, ``rabbitmqctl``), never changes them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pika
import pika.exceptions

from services.topology import ALL_QUEUES
from shared.messaging.connection import connect
from tests.e2e.conftest import Api, SystemUnderTest, token
from tests.support import rabbitmqctl, wait_until

#: Where an event waits on its way to a consumer: each work queue and its retry tiers. The audit trail
#: (bounded, consumed by nobody) and the dead-letter queues are ends.
WORK_QUEUES = tuple(name for spec in ALL_QUEUES if spec.max_length is None
                    for name in (spec.name, *spec.retry_queues))
DEAD_LETTER_QUEUES = tuple(spec.dlq for spec in ALL_QUEUES)


# -- clients -----------------------------------------------------------------------------------------

def new_client(admin: Api, role: str, organization_id: str | None = None, *, replica: int = 1) -> Api:
    """An API client of ``role`` created by an admin, calling with the token it got for its credentials."""
    response = admin.post("inventory", "/clients", json={
        "name": f"e2e {role}", "role": role, "organization_id": organization_id})
    assert response.status_code == 201, response.text
    client = response.json()
    return Api(admin.system, token(admin.system, client["client_id"], client["client_secret"]), replica)


def on_every_replica(api: Api, service: str, times: int = 1) -> list[Api]:
    """The same caller (same token), ``times`` per web replica of ``service``; each its own Api (its own
    session), so that each can call from a thread of its own."""
    bearer = api.http.headers["Authorization"].removeprefix("Bearer ")
    replicas = range(1, len(api.system.urls(service)) + 1)
    return [Api(api.system, bearer, replica) for _ in range(times) for replica in replicas]


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


# -- looking inside (read only) ------------------------------------------------------------------------

def query(system: SystemUnderTest, service: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a read-only query on a service's database (over the system's one connection to it)."""
    return system.database(service).execute(sql, params or None).fetchall()


def scalar(system: SystemUnderTest, service: str, sql: str, params: tuple = ()):
    return query(system, service, sql, params)[0][0]


class Queues:
    """How many messages the system's queues hold, by passive declares on one broker connection (opened
    on first use, closed on leaving ``with``): the broker's count now. ``rabbitmqctl list_queues`` shows
    a quorum queue's counts up to seconds late (5 messages published: it said 0 for some 5 s).

    A passive declare counts the messages ready for delivery only: what a consumer took and has not
    acknowledged is in ``unacknowledged``.
    """

    def __init__(self, system: SystemUnderTest) -> None:
        self.system = system
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def ready(self, names: tuple[str, ...]) -> dict[str, int]:
        """Ready messages of each queue; a queue that does not exist fails the test."""
        try:
            return self._declare(names)
        except pika.exceptions.AMQPConnectionError:
            # The broker dropped it (missed heartbeats while the test waited on something else): again on a
            # new one.
            self.close()
            return self._declare(names)

    def _declare(self, names: tuple[str, ...]) -> dict[str, int]:
        if self._connection is None:
            self._connection = connect(self.system.amqp_url, name="e2e-queues")
            self._channel = self._connection.channel()
        try:
            return {name: self._channel.queue_declare(queue=name, passive=True).method.message_count
                    for name in names}
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            raise AssertionError(f"a queue of {names} is missing: {exc}") from exc

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()
        self._connection = self._channel = None

    def __enter__(self) -> Queues:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unacknowledged(system: SystemUnderTest) -> int:
    """Messages the system's consumers hold unacknowledged (being handled, or prefetched and waiting), as
    their channels count them: unlike ``list_queues`` (seconds late for quorum queues), ``list_channels``
    asks each channel now. One ``rabbitmqctl`` (an Erlang VM start, about a second): ask last."""
    listed = rabbitmqctl("list_channels", "--no-table-headers", "vhost", "messages_unacknowledged")
    counts = [line.split("\t") for line in listed.splitlines()]
    return sum(int(count) for vhost, count in counts if vhost == system.vhost)


def unsent_events(system: SystemUnderTest) -> int:
    """Events recorded in an outbox and not yet published (relayed and confirmed)."""
    return sum(scalar(system, service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
               for service in ("inventory", "scheduler", "notifier"))


def undelivered_notifications(admin: Api) -> int:
    """Notifications still to be sent: pending, or failed and waiting for their next attempt."""
    return sum(total(admin, "notifier", "/notifications", status=status) for status in ("pending", "failed"))


def sweeps_run(system: SystemUnderTest, trigger: str) -> int:
    """How many due sweeps the scheduler recorded with this trigger (``startup``, ``api``, ``cron``)."""
    return scalar(system, "scheduler", "SELECT count(*) FROM sweep_runs WHERE trigger = %s", (trigger,))


# -- waiting -----------------------------------------------------------------------------------------

def wait(system: SystemUnderTest, condition, timeout: float, message: str, interval: float = 0.25):
    """``wait_until`` whose failure carries the tail of every process's log."""
    try:
        return wait_until(condition, timeout, interval, message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{system.logs()}") from None


def wait_for_startup_sweeps(system: SystemUnderTest, timeout: float = 60) -> None:
    """Every scheduler worker sweeps once shortly after it starts; wait until each has, so that the story's
    own sweeps are the ones that notice what the story registers."""
    workers = len(system.of("scheduler-worker"))
    wait(system, lambda: sweeps_run(system, "startup") >= workers, timeout,
         f"the startup sweep of {workers} scheduler worker(s)", interval=0.5)


def settle(admin: Api, timeout: float = 60) -> None:
    """Wait until nothing is on its way: every event relayed, every work and retry queue drained, no
    message in a consumer's hands, every notification delivered (or given up). Checked in the order
    events flow, twice in a row, so that nothing slips between two checks."""
    system = admin.system
    with Queues(system) as queues:
        def quiet() -> bool:
            return (unsent_events(system) == 0
                    and not any(queues.ready(WORK_QUEUES).values())
                    and unacknowledged(system) == 0
                    and undelivered_notifications(admin) == 0)

        wait(system, lambda: quiet() and quiet(), timeout, "every event relayed, consumed and delivered",
             interval=0.3)


def assert_nothing_lost(admin: Api) -> None:
    """No message was dead-lettered and no notification given up on: every event did what it should."""
    with Queues(admin.system) as queues:
        dead_letters = {name: count for name, count in queues.ready(DEAD_LETTER_QUEUES).items() if count}
    assert not dead_letters, f"dead-lettered: {dead_letters}\n{admin.system.logs()}"
    response = admin.get("notifier", "/notifications", params={"status": "dead"})
    assert response.status_code == 200, response.text
    assert response.json() == [], response.json()
