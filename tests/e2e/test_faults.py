"""Faults, nothing lost and nothing twice: 2,000 notices through the whole system while it is hurt.

2,000 enterprises, each with one contact and one instrument due today (an instrument CSV import each),
and an admin webhook endpoint for every recalibration notice. A due sweep then makes one notice per
enterprise, 2,000 in all, each going scheduler outbox -> relay -> broker -> the notifier's consumer ->
one email (SMTP) and one webhook. While the 2,000 are in flight every worker process (the relays,
consumers and dispatchers) is killed with SIGKILL at random moments (seeded) and restarted, the broker
closes every connection of the system's vhost, the SMTP server is away for some seconds and the webhook
receiver answers 503 for some seconds. The inventory's worker is also killed while it relays the
instruments.

Afterwards: every notice was made once and arrived once (distinct Message-IDs and webhook-ids at the
receivers are exactly the notifier's sent notifications, one per notice and recipient), raw re-sends
stay within what the dispatcher's at-least-once window allows, every dead-letter queue is empty and
every work queue drained, and the delivery log shows every notification sent with the attempts that
failed during the outages. The figures are printed (``pytest -s``).

Runs once with one process of each kind and once with two (the ``replicas`` fixture's parameter).
"""

from __future__ import annotations

import inspect
import json
import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from services.notifier.delivery import Dispatcher
from services.notifier.mail import message_id
from services.notifier.worker import WEBHOOK_BATCH_SIZE
from tests.e2e.actions import (
    assert_nothing_lost,
    instruments_csv,
    query,
    scalar,
    settle,
    wait,
    wait_for_startup_sweeps,
)
from tests.e2e.conftest import SystemUnderTest
from tests.e2e.receivers import SmtpSink, WebhookReceiver
from tests.support import valid_credit_code

#: One per enterprise (a sweep tells an enterprise of all its items in one notice).
NOTICES = 2_000
SEED = 20_240_611
HTTP_THREADS = 8
WORKERS = ("inventory-worker", "scheduler-worker", "notifier-worker")
#: The broker connections of one process of each worker: a relay each, a consumer in the scheduler's and
#: the notifier's.
WORKER_CONNECTIONS = 5
NOTICE_TYPES = "refstd.scheduler.recalibration.*"
#: How many outcomes a dispatcher records at a time: what a worker killed mid-batch may send again.
RECORD_EVERY = inspect.signature(Dispatcher).parameters["record_every"].default
#: How long the SMTP server is stopped and the webhook receiver fails, seconds.
OUTAGE_SECONDS = 6.0
#: Everything delivered within this after the sweep, faults included (a bound, not the expectation: some
#: 50 s, of which up to 30 s is a killed notifier worker's claim running out; see the conftest).
DELIVERY_TIMEOUT = 240.0


# -- the faults --------------------------------------------------------------------------------------

@dataclass
class Fault:
    """One thing done to the system once ``after`` seconds have passed and ``progress`` reached ``at``."""

    what: str  # kill | close_connections | smtp_outage | webhook_outage
    at: float = 0.0
    after: float = 0.0
    target: str = ""  # the process, for a kill
    measure: str = "all"  # which progress: all | email | webhook
    down: float = 0.0  # seconds before the restart or the end of an outage
    fired_at: float | None = None


@dataclass
class Chaos:
    """Fires faults as the run progresses and undoes them (restart, server back) after their time."""

    system: SystemUnderTest
    smtp: SmtpSink
    webhooks: WebhookReceiver
    log: list[str] = field(default_factory=list)
    kills: Counter = field(default_factory=Counter)
    connections_closed: int = 0
    _undo: list = field(default_factory=list)  # (monotonic time, description, action)
    _threads: list = field(default_factory=list)

    def step(self, faults: list[Fault], elapsed: float, progress: dict[str, float]) -> None:
        now = time.monotonic()
        for entry in [u for u in self._undo if u[0] <= now]:
            self._undo.remove(entry)
            entry[2]()
            self.log.append(f"{elapsed:6.1f} s  {entry[1]}")
        for fault in faults:
            if self._closing:
                break  # nothing else while the broker closes the connections: it closes them all
            if fault.fired_at is None and elapsed >= fault.after and progress[fault.measure] >= fault.at:
                if fault.what == "close_connections" and self._restarting:
                    continue  # when every worker is up, so that it closes all of their connections
                fault.fired_at = elapsed
                self._fire(fault, now, elapsed, progress)

    def _fire(self, fault: Fault, now: float, elapsed: float, progress: dict[str, float]) -> None:
        self.log.append(f"{elapsed:6.1f} s  {fault.what} {fault.target} at {progress[fault.measure]:.0%} "
                        f"({fault.measure})".rstrip())
        if fault.what == "kill":
            self.system.kill(fault.target)
            self.kills[fault.target] += 1
            self._undo.append((now + fault.down, f"restart {fault.target}",
                               lambda name=fault.target: self.system.restart(name)))
        elif fault.what == "close_connections":
            # In the background (rabbitmqctl takes a second or two): outages still end on time meanwhile.
            thread = threading.Thread(target=self._close_connections, daemon=True)
            thread.start()
            self._threads.append(thread)
        elif fault.what == "smtp_outage":
            self.smtp.stop()
            self._undo.append((now + fault.down, "SMTP server back", self.smtp.start))
        elif fault.what == "webhook_outage":
            self.webhooks.failing = True
            self._undo.append((now + fault.down, "webhook receiver back",
                               lambda: setattr(self.webhooks, "failing", False)))

    def _connections(self) -> int:
        result = subprocess.run(["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "vhost"],
                                capture_output=True, text=True, timeout=60)
        return result.stdout.split().count(self.system.vhost)

    def _close_connections(self) -> None:
        # Once every worker holds its connections (a restarted one may still be connecting), so that the
        # broker closes them all; only this system's vhost: other tests use the same broker meanwhile.
        deadline = time.monotonic() + 30
        while self._connections() < WORKER_CONNECTIONS * len(self.system.of("notifier-worker")):
            if time.monotonic() > deadline:
                break  # closed anyway; the test names the shortfall
            time.sleep(0.5)
        result = subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "--vhost", self.system.vhost, "--limit",
                                 "1000", "fault test: every connection of the vhost closed"],
                                capture_output=True, text=True, timeout=60)
        output = (result.stderr or result.stdout).strip()
        self.log.append(f"         close_all_connections -> exit {result.returncode} {output[:200]}")
        closed = re.search(r"Closed (\d+) connections", output)
        self.connections_closed += int(closed.group(1)) if closed else 0

    @property
    def _restarting(self) -> bool:
        return any(description.startswith("restart") for _, description, _ in self._undo)

    @property
    def _closing(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def settled(self) -> bool:
        return not self._undo and not self._closing

    def settle(self) -> None:
        """Undo what is still undone now (a test that failed must not leave the SMTP server down)."""
        for _, description, action in sorted(self._undo, key=lambda entry: entry[0]):
            action()
            self.log.append(f"         {description} (at the end)")
        self._undo.clear()
        for thread in self._threads:
            thread.join(60)


def import_faults(system: SystemUnderTest, rng: random.Random) -> list[Fault]:
    """The inventory's worker killed while it relays the instruments' events."""
    return [Fault("kill", at=rng.uniform(0.2, 0.7), target=process.name, down=rng.uniform(0.5, 2))
            for process in system.of("inventory-worker")]


def delivery_faults(system: SystemUnderTest, rng: random.Random) -> list[Fault]:
    """Each worker process killed at random moments of the delivery, the broker's connections closed,
    the SMTP server and the webhook receiver away for a while. Bounded: a fixed list."""
    faults = []
    for process in system.of("scheduler-worker"):
        # First while its relay publishes the 2,000 notices, then later (its start-up sweep runs again).
        faults.append(Fault("kill", after=rng.uniform(0.3, 1.5), target=process.name, down=rng.uniform(0.5, 2)))
        faults.append(Fault("kill", at=rng.uniform(0.2, 0.6), target=process.name, down=rng.uniform(0.5, 2)))
    for process in system.of("notifier-worker"):
        # Consumer and both dispatchers at work.
        faults.append(Fault("kill", at=rng.uniform(0.05, 0.4), target=process.name, down=rng.uniform(0.5, 2)))
        faults.append(Fault("kill", at=rng.uniform(0.45, 0.85), target=process.name, down=rng.uniform(0.5, 2)))
    for process in system.of("inventory-worker"):
        faults.append(Fault("kill", at=rng.uniform(0.1, 0.9), target=process.name, down=rng.uniform(0.5, 2)))
    # While the notifier's consumer still has notices to take (it is done at some 90 % of the deliveries).
    faults.append(Fault("close_connections", at=rng.uniform(0.1, 0.4)))
    faults.append(Fault("smtp_outage", at=rng.uniform(0.2, 0.5), measure="email", down=OUTAGE_SECONDS))
    faults.append(Fault("webhook_outage", at=rng.uniform(0.2, 0.5), measure="webhook", down=OUTAGE_SECONDS))
    return faults


# -- producing the notices through the APIs ----------------------------------------------------------

def post_all(system: SystemUnderTest, token: str, service: str, posts: list[dict], status: int = 201,
             done: list | None = None) -> list[dict]:
    """Every POST (``{"path": ..., **requests arguments}``) from a small thread pool, spread over the
    service's replicas; each must answer ``status``."""
    local = threading.local()
    urls = system.urls(service)

    def post(indexed: tuple[int, dict]) -> dict:
        index, arguments = indexed
        arguments = dict(arguments)
        path = arguments.pop("path")
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {token}"
        response = local.http.post(f"{urls[index % len(urls)]}/api/v1{path}", timeout=60, **arguments)
        assert response.status_code == status, f"POST {path}: {response.status_code} {response.text}"
        if done is not None:
            done.append(index)
        return response.json()

    with ThreadPoolExecutor(HTTP_THREADS) as pool:
        return list(pool.map(post, enumerate(posts)))


def pressure_gauge(number: int) -> dict:
    """An instrument never verified: due on its registration, today."""
    return {"name": "弹簧管式压力表", "category": "pressure gauge", "serial_number": f"PG-{number:05d}",
            "interval_months": 12, "mandatory": "true", "regulation": "JJG 52-2013"}


# -- the run -----------------------------------------------------------------------------------------

@dataclass
class FaultRun:
    system: SystemUnderTest
    tag: str
    domain: str
    path: str
    organizations: list[dict]
    figures: dict = field(default_factory=dict)
    sweeps: list[dict] = field(default_factory=list)
    sweep_started: float = 0.0
    kills: Counter = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    connections_closed: int = 0

    @property
    def replicas(self) -> int:
        return len(self.system.of("notifier-worker"))

    def notifications(self) -> list[tuple]:
        return query(self.system, "notifier", "SELECT id, event_id, channel, recipient, status, attempts, "
                                              "claimed_until FROM notifications")

    @property
    def notice_ids(self) -> set[str]:
        """The CloudEvent ids of the scheduler's notices."""
        return {event for (event,) in query(self.system, "scheduler", "SELECT DISTINCT event_id FROM notice_keys")}

    @property
    def notifier_kills(self) -> int:
        return sum(count for name, count in self.kills.items() if name.startswith("notifier-worker"))


def _progress(run: FaultRun, smtp: SmtpSink, webhooks: WebhookReceiver, smtp_before: int) -> dict[str, float]:
    # Raw arrivals (re-sends included) are enough to time the faults, and cheap to count.
    email = min(1.0, (len(smtp.messages) - smtp_before) / NOTICES)
    webhook = min(1.0, sum(1 for d in list(webhooks.deliveries) if d["path"] == run.path) / NOTICES)
    return {"email": email, "webhook": webhook, "all": (email + webhook) / 2}


def _all_sent(run: FaultRun) -> bool:
    rows = query(run.system, "notifier", "SELECT count(*), count(*) FILTER (WHERE status = 'sent' AND "
                                         "claimed_until IS NULL) FROM notifications")
    total, sent = rows[0]
    return total == 2 * NOTICES and sent == total


def _run_faults(system, as_admin, smtp, webhooks) -> FaultRun:
    rng = random.Random(SEED + len(system.of("notifier-worker")))
    tag = f"r{len(system.of('notifier-worker'))}-{uuid.uuid4().hex[:6]}"
    token = as_admin.http.headers["Authorization"].removeprefix("Bearer ")
    figures: dict = {}
    started = time.monotonic()

    # An admin endpoint for every recalibration notice: each notice is also one webhook.
    path = f"/faults/{tag}"
    response = as_admin.post("notifier", "/webhooks", json={
        "url": webhooks.url(path), "event_types": [NOTICE_TYPES], "organization_id": None})
    assert response.status_code == 201, response.text
    webhooks.add(path, response.json()["secret"])

    domain = f"{tag}.faults.example.com"
    organizations = post_all(system, token, "inventory", [
        {"path": "/organizations", "json": {
            "name": f"故障演练企业 {i:04d}", "name_en": f"Fault drill enterprise {i:04d}", "kind": "enterprise",
            "credit_code": valid_credit_code(f"91370300{i:09d}"), "contacts": [
                {"name": f"联系人 {i:04d}", "email": f"c{i:04d}@{domain}", "locale": ("en", "zh-CN")[i % 2]}]}}
        for i in range(NOTICES)])
    figures["organizations registered (s)"] = round(time.monotonic() - started, 1)

    # Every scheduler worker's start-up sweep has run, so the instruments are noticed by the sweep below.
    wait_for_startup_sweeps(system)

    # The instruments, while the inventory's worker (the relay of their events) is killed.
    run = FaultRun(system, tag, domain, path, organizations)
    chaos = Chaos(system, smtp, webhooks, log=["instrument import (seconds from its start):"])
    faults = import_faults(system, rng)
    done: list = []
    failures: list = []

    def import_instruments() -> None:
        try:
            post_all(system, token, "inventory", [
                {"path": "/instruments/import", "params": {"organization_id": organization["id"]},
                 "files": {"file": ("instruments.csv", instruments_csv([pressure_gauge(i)]), "text/csv")}}
                for i, organization in enumerate(organizations)], status=200, done=done)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    importing = threading.Thread(target=import_instruments)
    phase = time.monotonic()
    importing.start()
    try:
        while importing.is_alive() or not chaos.settled:
            progress = len(done) / NOTICES
            chaos.step(faults, time.monotonic() - phase, {"all": progress})
            time.sleep(0.05)
    finally:
        chaos.settle()
    importing.join()
    if failures:
        raise failures[0]
    assert len(done) == NOTICES
    read_models = {
        ("scheduler", "SELECT count(*) FROM tracked_items WHERE item_kind = 'instrument'"): NOTICES,
        ("scheduler", "SELECT count(*) FROM known_organizations"): NOTICES,
        ("notifier", "SELECT count(*) FROM known_organizations"): NOTICES,
    }
    wait(system, lambda: all(scalar(system, service, sql) == count for (service, sql), count in read_models.items()),
         120, "the instruments and organizations in the scheduler's and notifier's read models", interval=0.5)
    figures["setup (s)"] = round(time.monotonic() - started, 1)

    # Two sweeps at once (on every scheduler web replica): the advisory lock lets one make the notices.
    smtp_before = len(smtp.messages)
    faults = delivery_faults(system, rng)
    urls = system.urls("scheduler")
    run.sweep_started, sweep_wall = time.monotonic(), time.time()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(
            lambda url: requests.post(f"{url}/api/v1/sweeps", headers={"Authorization": f"Bearer {token}"},
                                      timeout=120),
            [urls[0], urls[-1]]))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        run.sweeps.append(answer.json())
    figures["sweep (s)"] = round(time.monotonic() - run.sweep_started, 2)

    deadline = run.sweep_started + DELIVERY_TIMEOUT
    finished = None
    chaos.log.append("delivery (seconds from the sweep):")
    try:
        while True:
            elapsed = time.monotonic() - run.sweep_started
            chaos.step(faults, elapsed, _progress(run, smtp, webhooks, smtp_before))
            if finished is None and _all_sent(run):
                finished = elapsed
            if finished is not None and chaos.settled and all(f.fired_at is not None for f in faults):
                break
            if time.monotonic() > deadline:
                pending = Counter(row[4] for row in run.notifications())
                pytest.fail(f"not delivered within {DELIVERY_TIMEOUT:.0f} s: notifications {dict(pending)}\n"
                            + "\n".join(chaos.log) + "\n" + system.logs(15))
            time.sleep(0.2)
    finally:
        chaos.settle()
        run.kills = chaos.kills
        run.log = chaos.log
    figures["sweep to every notification sent, with faults (s)"] = round(finished, 1)
    created = scalar(system, "notifier", "SELECT extract(epoch FROM max(created_at)) FROM notifications")
    figures["sweep to the last notification recorded by the notifier's consumer (s)"] = round(
        float(created) - sweep_wall, 1)
    for channel, last in query(system, "notifier", "SELECT channel, extract(epoch FROM max(sent_at)) "
                                                   "FROM notifications GROUP BY 1 ORDER BY 1"):
        figures[f"sweep to the last {channel} sent (s)"] = round(float(last) - sweep_wall, 1)
    figures["faults"] = len(faults)
    figures["broker connections closed"] = chaos.connections_closed
    run.connections_closed = chaos.connections_closed
    run.figures = figures
    return run


@pytest.fixture(scope="module")
def run(system, as_admin, smtp, webhooks) -> FaultRun:
    result = _run_faults(system, as_admin, smtp, webhooks)
    # Whatever was still on its way is through: every outbox relayed, every work and retry queue empty.
    settle(as_admin, timeout=120)
    print(f"\n== faults, {result.replicas} process(es) of each kind ==")
    for line in result.log:
        print("  " + line)
    return result


# -- what a user would notice ------------------------------------------------------------------------

def test_every_worker_was_killed_and_came_back(run):
    for entry in WORKERS:
        for process in run.system.of(entry):
            assert run.kills[process.name] >= 1, f"{process.name} was never killed"
            assert process.alive, f"{process.name} did not come back:\n{process.log_tail()}"
    assert run.connections_closed >= WORKER_CONNECTIONS * run.replicas, run.log
    run.figures["kills"] = dict(sorted(run.kills.items()))


def test_every_notice_was_made_once(run):
    """One notice per enterprise: the two sweeps at once and the start-up sweeps after each restart made
    none twice (each key once, ever; one sweep at a time)."""
    assert sorted(sweep["notices_emitted"] for sweep in run.sweeps) == [0, NOTICES], run.sweeps
    keys = query(run.system, "scheduler", "SELECT item_id, event_id FROM notice_keys")
    assert len(keys) == NOTICES and len({event for _, event in keys}) == NOTICES
    notices = [json.loads(body) for (body,) in query(run.system, "scheduler", "SELECT body FROM outbox "
                                                     "WHERE type LIKE 'refstd.scheduler.recalibration.%'")]
    assert Counter(notice["data"]["recipient"]["organization_id"] for notice in notices) == {
        organization["id"]: 1 for organization in run.organizations}
    later = query(run.system, "scheduler", "SELECT trigger, notices_emitted FROM sweep_runs "
                                           "WHERE started_at > (SELECT min(started_at) FROM sweep_runs "
                                           "WHERE notices_emitted > 0)")
    assert all(emitted == 0 for _, emitted in later), later
    run.figures["sweeps after the one that made the notices (all emitted 0)"] = dict(Counter(t for t, _ in later))


def test_every_email_arrived_exactly_once(run, smtp):
    counts = smtp.counts(to=run.domain)
    sent = [row for row in run.notifications() if row[2] == "email"]
    assert Counter(row[4] for row in sent) == {"sent": NOTICES}
    # One notification per notice and contact: each contact was told of its enterprise's notice once.
    assert Counter(row[1] for row in sent) == dict.fromkeys(run.notice_ids, 1)
    assert Counter(row[3] for row in sent) == {o["contacts"][0]["email"]: 1 for o in run.organizations}
    # What arrived is exactly what the notifier sent.
    assert set(counts) == {message_id(row[0]) for row in sent}
    resent = sum(count - 1 for count in counts.values())
    run.figures["emails: distinct Message-IDs / arrivals / re-sends"] = (len(counts), counts.total(), resent)
    # A worker killed with outcomes not yet recorded sends those again (at most RECORD_EVERY: the one in
    # hand and those waiting to be recorded); the SMTP server stopped between its 250 and a client reading
    # it too: one message per notifier worker, each may have one in flight.
    assert resent <= run.notifier_kills * RECORD_EVERY + run.replicas, counts.most_common(5)


def test_every_webhook_arrived_exactly_once(run, webhooks):
    counts = webhooks.counts(path=run.path)
    sent = [row for row in run.notifications() if row[2] == "webhook"]
    assert Counter(row[4] for row in sent) == {"sent": NOTICES}
    assert Counter(row[1] for row in sent) == dict.fromkeys(run.notice_ids, 1)
    # webhook-id is the notice's CloudEvent id.
    assert set(counts) == run.notice_ids
    # Every signature verified (a request a killed worker left unfinished is no delivery, and not counted).
    assert not [r for r in webhooks.rejected if r["path"] == run.path]
    resent = sum(count - 1 for count in counts.values())
    run.figures["webhooks: distinct webhook-ids / arrivals / re-sends"] = (len(counts), counts.total(), resent)
    run.figures["webhook requests cut short by a kill"] = len([r for r in webhooks.cut_short if r["path"] == run.path])
    # The deliveries in flight when a worker died (a batch at most) are sent again.
    assert resent <= run.notifier_kills * WEBHOOK_BATCH_SIZE, counts.most_common(5)


def test_nothing_was_dead_lettered_or_given_up(run, as_admin):
    assert_nothing_lost(as_admin)


def test_the_delivery_log_agrees(run, as_admin):
    listed = []
    for page in range(1, 100):
        response = as_admin.get("notifier", "/notifications", params={"page": page, "page_size": 500})
        assert response.status_code == 200, response.text
        listed += response.json()
        if len(listed) >= json.loads(response.headers["X-Pagination"])["total"]:
            break
    assert len(listed) == 2 * NOTICES
    assert Counter(n["status"] for n in listed) == {"sent": 2 * NOTICES}
    assert {n["id"] for n in listed} == {row[0] for row in run.notifications()}
    attempts = dict(query(run.system, "notifier", "SELECT outcome, count(*) FROM delivery_attempts GROUP BY 1"))
    assert sum(n["attempts"] for n in listed) == sum(attempts.values())
    assert attempts["sent"] == 2 * NOTICES
    failed = query(run.system, "notifier", "SELECT n.channel, a.error, count(*) FROM delivery_attempts a JOIN "
                                           "notifications n ON n.id = a.notification_id WHERE a.outcome = "
                                           "'failed' GROUP BY 1, 2")
    by_channel = Counter()
    for channel, _error, count in failed:
        by_channel[channel] += count
    # The outages are in the log: refused SMTP connections, the receiver's 503s.
    assert any(channel == "email" and "SMTP" in error for channel, error, _ in failed), failed
    assert any(channel == "webhook" and "503" in error for channel, error, _ in failed), failed
    # One of them, as an operator would look it up: the failures, then the delivery.
    retried = next(n for n in listed if n["channel"] == "email" and n["attempts"] > 1)
    detail = as_admin.get("notifier", f"/notifications/{retried['id']}").json()
    outcomes = [attempt["outcome"] for attempt in detail["delivery_attempts"]]
    assert outcomes == ["failed"] * (len(outcomes) - 1) + ["sent"]
    assert all(a["error"] for a in detail["delivery_attempts"][:-1])
    run.figures["attempts logged: sent / failed (email, webhook)"] = (
        attempts["sent"], attempts.get("failed", 0), dict(by_channel))
    run.figures["most attempts of one notification"] = max(n["attempts"] for n in listed)


def test_figures(run):
    print(f"\n== figures, {run.replicas} process(es) of each kind, {NOTICES} notices ==")
    for name, value in run.figures.items():
        print(f"  {name}: {value}")
