"""A cheap HTTP/1.1 load generator: N concurrent clients on asyncio streams, for a fixed time.

It runs in a process of its own (``run_in_process``), so that its event loop is not slowed by the
process that started the system. Each client keeps its connection open while the server keeps it
(HTTP/1.1 keep-alive) and opens a new one when the server answers ``Connection: close`` (gunicorn's
sync workers do, after every response); the time to connect is part of a request's latency, as it is
for a real client. A latency is measured from the moment the request is ready to be sent to the
moment its whole response has been read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import multiprocessing
import resource
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 30.0  # seconds; a request taking longer counts as an error


@dataclass
class Scenario:
    """What every request of a run is: the same method, path, headers and body."""

    label: str
    url: str  # base URL, http://host:port
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json_body: dict | None = None

    def body(self, index: int) -> bytes:
        return b"" if self.json_body is None else json.dumps(self.json_body).encode()

    def capacity(self) -> int | None:
        """How many requests this scenario can make (None: no limit)."""
        return None

    def request(self, index: int) -> bytes:
        host = urlsplit(self.url).netloc
        body = self.body(index)
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive",
                 *(f"{name}: {value}" for name, value in self.headers.items())]
        if body or self.method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class BookingScenario(Scenario):
    """POST /bookings where request ``i`` books its own slot: ``[first + i * slot, first + (i + 1) * slot)``,
    so no two requests overlap and each can be confirmed."""

    standard_id: str = ""
    first_slot: str = ""  # RFC 3339 with an offset
    slot_minutes: int = 15
    last_end: str = ""  # no slot may end after this (the API's booking horizon)

    def body(self, index: int) -> bytes:
        starts = dt.datetime.fromisoformat(self.first_slot) + dt.timedelta(minutes=self.slot_minutes * index)
        ends = starts + dt.timedelta(minutes=self.slot_minutes)
        return json.dumps({"standard_id": self.standard_id, "starts_at": starts.isoformat(),
                           "ends_at": ends.isoformat(), "purpose": f"load {index}"}).encode()

    def capacity(self) -> int | None:
        span = dt.datetime.fromisoformat(self.last_end) - dt.datetime.fromisoformat(self.first_slot)
        return int(span / dt.timedelta(minutes=self.slot_minutes))


@dataclass
class Result:
    label: str
    requests: int
    seconds: float
    latencies: list[float]  # seconds, sorted
    statuses: dict[int, int]
    errors: dict[str, int]
    connections: int
    client_cpu_seconds: float
    next_index: int  # the first request index not used (a booking scenario's next free slot)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        rank = min(len(self.latencies), max(1, math.ceil(share * len(self.latencies))))
        return self.latencies[rank - 1]

    @property
    def not_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def combine(results: list[Result]) -> Result:
    """One result for several runs of the same scenario, as if they were one."""
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for result in results:
        statuses.update(result.statuses)
        errors.update(result.errors)
    return Result(label=results[0].label, requests=sum(r.requests for r in results),
                  seconds=sum(r.seconds for r in results),
                  latencies=sorted(latency for r in results for latency in r.latencies), statuses=dict(statuses),
                  errors=dict(errors), connections=sum(r.connections for r in results),
                  client_cpu_seconds=sum(r.client_cpu_seconds for r in results), next_index=results[-1].next_index)


class _Run:
    """The shared state of the clients of one timed phase."""

    def __init__(self, scenario: Scenario, next_index: int, limit: int, stop_at: float) -> None:
        self.scenario = scenario
        self.next_index = next_index
        self.limit = limit
        self.stop_at = stop_at
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.connections = 0

    def take(self) -> int | None:
        if time.monotonic() >= self.stop_at or self.next_index >= self.limit:
            return None
        index = self.next_index
        self.next_index += 1
        return index


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection); the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    close = headers.get("connection") == "close" or version == "HTTP/1.0"
    return int(status), close


async def _client(run: _Run, host: str, port: int) -> None:
    reader = writer = None
    while (index := run.take()) is not None:
        request = run.scenario.request(index)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                    run.connections += 1
                writer.write(request)
                status, close = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            run.errors[type(exc).__name__] += 1
            close = True
        else:
            run.latencies.append(time.perf_counter() - started)
            run.statuses[status] += 1
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _phase(scenario: Scenario, clients: int, seconds: float, first_index: int, limit: int) -> tuple[_Run, float]:
    parts = urlsplit(scenario.url)
    run = _Run(scenario, first_index, limit, time.monotonic() + seconds)
    started = time.perf_counter()
    await asyncio.gather(*(_client(run, parts.hostname, parts.port) for _ in range(clients)))
    return run, time.perf_counter() - started


def run_load(scenario: Scenario, clients: int, seconds: float, warmup: float, first_index: int = 0,
             max_requests: int = 200_000) -> Result:
    """``warmup`` seconds of load that are not counted, then ``seconds`` that are (statuses, errors and the
    client's CPU time too); at most ``max_requests`` requests in all, and no more than the scenario's
    capacity."""
    capacity = scenario.capacity()
    limit = first_index + min(max_requests, capacity - first_index if capacity is not None else max_requests)
    warm, _ = asyncio.run(_phase(scenario, clients, warmup, first_index, limit))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    run, elapsed = asyncio.run(_phase(scenario, clients, seconds, warm.next_index, limit))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return Result(label=scenario.label, requests=len(run.latencies), seconds=elapsed,
                  latencies=sorted(run.latencies), statuses=dict(run.statuses), errors=dict(run.errors),
                  connections=run.connections, client_cpu_seconds=cpu, next_index=run.next_index)


class LoadProcess:
    """One process that runs the load of every scenario, in turn."""

    def __enter__(self) -> LoadProcess:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self

    def run(self, scenario: Scenario, **kwargs) -> Result:
        return self._pool.submit(run_load, scenario, **kwargs).result()

    def __exit__(self, *_exc) -> None:
        self._pool.shutdown()
