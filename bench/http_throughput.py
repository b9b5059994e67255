"""HTTP throughput and latency of the web servers, each against a trivial JSON endpoint of the same server
measured in the same run, and the resident memory of every process of the system.

    .venv/bin/python -m bench.http_throughput [--clients 32] [--seconds 10] [--rounds 5] [--warmup 2]
                                              [--web-workers 2] [--database-url postgresql://...]

Starts the whole system as `make run` does, every Procfile entry as a real process (scripts/system.py):
gunicorn with ``--web-workers`` sync workers per web server, and the three workers, on fresh PostgreSQL
databases (created on the server of ``--database-url``, dropped afterwards) and a fresh RabbitMQ vhost
(deleted afterwards). Registers one bookable standard through the inventory API (admin token) and waits
until the scheduler has learnt it from the inventory's events. Then, per server, ``--clients``
concurrent clients load its trivial JSON endpoint and the measured endpoint in turn, ``--rounds`` times
(``--seconds`` counted per endpoint in all, after ``--warmup`` seconds not counted), so that the
machine's changing load weighs on both alike:

- inventory: ``GET /healthz`` and ``GET /api/v1/standards/{id}`` (admin);
- scheduler: ``GET /healthz`` and ``POST /api/v1/bookings`` (lab_staff, so confirmed at once), each
  request booking its own 15-minute slot so that none overlaps another.

The clients run in one separate process (bench/http_load.py) on the same machine as the servers, the
workers, PostgreSQL and RabbitMQ, and take CPU from them. While bookings are made the scheduler worker
relays their events and the notifier records and mails them (to files), as in production.

Prints a Markdown table per server (requests per second, p50 and p99 latency, non-2xx answers, and
rps(endpoint) / rps(trivial)) and the resident memory (VmRSS) of every process, idle and after the load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from zoneinfo import ZoneInfo

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.http_load import BookingScenario, LoadProcess, Result, Scenario, combine
from bench.support import POSTGRES_URL, RABBITMQ, fresh_database, fresh_vhost
from scripts.system import SERVICES, System
from shared.auth import TokenSigner, private_pem, public_pem

INSTITUTE_TZ = ZoneInfo("Asia/Shanghai")
BOOKING_HORIZON_DAYS = 1800  # the API accepts bookings starting up to 1825 days ahead


def system_env(amqp_url: str, databases: dict[str, str], var_dir: str, key: Ed25519PrivateKey) -> dict[str, str]:
    key_pem = private_pem(key)
    env = {f"{service.upper()}_DATABASE_URL": url for service, url in databases.items()}
    env.update(AMQP_URL=amqp_url, REFSTD_VAR_DIR=var_dir, DEMO_DATA="0", INSTITUTE_TZ=str(INSTITUTE_TZ),
               JWT_PRIVATE_KEY=key_pem, JWT_PUBLIC_KEY=public_pem(key))
    return env


def register_standard(inventory: str, headers: dict, today: dt.date) -> str:
    """A standard that can be booked for the next five years: in service, bookable, no equipment, and an
    assessment certificate valid for six years."""
    body = {
        "code": "BENCH-001", "name": "气体流量标准装置", "name_en": "Gas flow standard", "discipline": "thermal",
        "measurand": "gas flow", "range": {"min": 0.1, "max": 100.0, "unit": "m^3/h"},
        "uncertainty": "U = 0.5 %, k = 2",
        "assessment_certificate": {"number": "[2026]鲁量标淄证字第001号",
                                   "issued_on": (today - dt.timedelta(days=30)).isoformat(),
                                   "expires_on": (today + dt.timedelta(days=6 * 365)).isoformat()},
        "custodian": {"name": "李工", "email": "li@bench.example"}, "industries": ["hydrogen"],
        "bookable": True, "recovery_minutes": 0,
    }
    response = requests.post(f"{inventory}/api/v1/standards", json=body, headers=headers, timeout=30)
    if response.status_code != 201:
        raise SystemExit(f"registering the standard answered {response.status_code}: {response.text}")
    return response.json()["id"]


def wait_until_scheduled(scheduler: str, headers: dict, standard_id: str, timeout: float = 60) -> None:
    """Until the scheduler knows the standard (inventory outbox -> relay -> RabbitMQ -> scheduler consumer)."""
    now = dt.datetime.now(INSTITUTE_TZ)
    params = {"from": now.isoformat(), "to": (now + dt.timedelta(days=1)).isoformat()}
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{scheduler}/api/v1/standards/{standard_id}/availability", params=params,
                                headers=headers, timeout=10)
        if response.status_code == 200:
            return
        if response.status_code != 404 or time.monotonic() > deadline:
            raise SystemExit(f"the scheduler did not learn the standard: {response.status_code} {response.text}")
        time.sleep(0.2)


def scenarios(system: System, standard_id: str, admin: dict, lab: dict) -> dict[str, tuple[Scenario, Scenario]]:
    """Per server: its trivial endpoint, and the endpoint measured against it."""
    inventory, scheduler = system.url("inventory"), system.url("scheduler")
    now = dt.datetime.now(INSTITUTE_TZ)
    first_slot = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), INSTITUTE_TZ)
    return {
        "inventory": (Scenario("`GET /healthz` (trivial)", inventory, "GET", "/healthz"),
                      Scenario("`GET /api/v1/standards/{id}`", inventory, "GET", f"/api/v1/standards/{standard_id}",
                               headers=admin)),
        "scheduler": (Scenario("`GET /healthz` (trivial)", scheduler, "GET", "/healthz"),
                      BookingScenario("`POST /api/v1/bookings` (each a new slot)", scheduler, "POST",
                                      "/api/v1/bookings", headers=lab, standard_id=standard_id,
                                      first_slot=first_slot.isoformat(),
                                      last_end=(now + dt.timedelta(days=BOOKING_HORIZON_DAYS)).isoformat())),
    }


def measure(load: LoadProcess, pair: tuple[Scenario, Scenario], args) -> tuple[Result, Result, list[float]]:
    """The trivial endpoint and the other one in turn, ``args.rounds`` times each, so that the machine's
    changing load weighs on both alike; returns both results and the ratio of each round."""
    runs: tuple[list[Result], list[Result]] = ([], [])
    for _ in range(args.rounds):
        for scenario, previous in zip(pair, runs, strict=True):
            previous.append(load.run(scenario, clients=args.clients, seconds=args.seconds / args.rounds,
                                     warmup=0 if previous else args.warmup,
                                     first_index=previous[-1].next_index if previous else 0))
    ratios = [other.rps / trivial.rps for trivial, other in zip(*runs, strict=True)]
    return combine(runs[0]), combine(runs[1]), ratios


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def print_results(results: dict[str, tuple[Result, Result, list[float]]], args, idle: dict[str, int],
                  loaded: dict[str, int]) -> None:
    cores = len(os.sched_getaffinity(0))
    every = [r for trivial, other, _ in results.values() for r in (trivial, other)]
    client_cpu = max(r.client_cpu_seconds / r.seconds for r in every) * 100
    print(f"HTTP: gunicorn, {args.web_workers} sync workers per web server, {args.clients} concurrent clients; "
          f"per server its trivial endpoint and the measured one in turn, {args.rounds} rounds of "
          f"{args.seconds / args.rounds:g} s each ({args.warmup:g} s of warm-up before the first, not counted); "
          "the whole system running (every Procfile entry) on PostgreSQL and RabbitMQ.\n")
    connections = sum(r.connections for r in every) / max(1, sum(r.requests for r in every))
    print(f"The clients (one asyncio process) share the machine's {cores} cores with the servers, the workers, "
          f"PostgreSQL and RabbitMQ: they used up to {client_cpu:.0f} % of one core. They keep a connection "
          f"open while the server does, and opened {connections:.2f} TCP connections per request (gunicorn's "
          "sync workers close the connection after each response); connecting is part of a latency.\n")
    for server, (trivial, other, ratios) in results.items():
        print(f"{server} ({args.web_workers} workers)\n")
        print("| request | requests | rps | p50 ms | p99 ms | non-2xx | errors | rps / trivial |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for result in (trivial, other):
            ratio = f"**{result.rps / trivial.rps:.2f}**" if result is other else "1.00"
            errors = ", ".join(f"{n} {name}" for name, n in result.errors.items()) or "0"
            print(f"| {result.label} | {result.requests:,} | {result.rps:,.0f} | {ms(result.percentile(0.5))} | "
                  f"{ms(result.percentile(0.99))} | {result.not_2xx} | {errors} | {ratio} |")
        print(f"\nrps / trivial per round: {', '.join(f'{r:.2f}' for r in ratios)}\n")
    print("Resident memory (VmRSS, MiB): idle after start and seeding, and after the load\n")
    print("| process | idle | after load |")
    print("|---|---:|---:|")
    for name in dict.fromkeys([*idle, *loaded]):
        before, after = idle.get(name), loaded.get(name)
        print(f"| {name} | {before / 1024 if before else 0:.1f} | {after / 1024 if after else 0:.1f} |")
    print(f"| **all processes** | **{sum(idle.values()) / 1024:.1f}** | **{sum(loaded.values()) / 1024:.1f}** |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10, help="counted load per endpoint, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns of trivial and measured endpoint")
    parser.add_argument("--warmup", type=float, default=2, help="load before each endpoint's count starts")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--database-url", default=POSTGRES_URL,
                        help="a PostgreSQL server URL (fresh databases are created on it and dropped)")
    parser.add_argument("--rabbitmq", default=RABBITMQ)
    args = parser.parse_args(argv)

    key = Ed25519PrivateKey.generate()
    signer = TokenSigner(key, ttl_seconds=3600)
    admin = {"Authorization": f"Bearer {signer.issue('bench-admin', 'admin', None)}"}
    lab = {"Authorization": f"Bearer {signer.issue('bench-lab', 'lab_staff', None)}"}

    with ExitStack() as stack:
        amqp_url = stack.enter_context(fresh_vhost(args.rabbitmq))
        databases = {}
        for service in SERVICES:
            databases[service], drop = fresh_database(args.database_url, service)
            stack.callback(drop)
        var_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="refstd-bench-http-"))
        system = System(system_env(amqp_url, databases, var_dir, key), Path(var_dir) / "logs",
                        web_workers=args.web_workers)
        system.migrate()
        stack.callback(system.stop)
        try:
            system.start()
            standard_id = register_standard(system.url("inventory"), admin, dt.datetime.now(INSTITUTE_TZ).date())
            wait_until_scheduled(system.url("scheduler"), lab, standard_id)
            idle = system.rss_kib()
            with LoadProcess() as load:
                results = {server: measure(load, pair, args)
                           for server, pair in scenarios(system, standard_id, admin, lab).items()}
            loaded = system.rss_kib()
        except BaseException:
            print(system.logs(), file=sys.stderr)
            raise
    print_results(results, args, idle, loaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
