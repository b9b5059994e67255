"""The whole system as real processes, started from the Procfile exactly as `make run` starts it.

Used by the end-to-end and fault tests (tests/e2e) and by the HTTP benchmark (bench/http_throughput.py):

    system = System(env={...}, log_dir=path, replicas=2)
    system.migrate()          # `python -m services.<name>.manage migrate` for every service
    system.start()            # every Procfile entry, ``replicas`` times; waits until each web answers /readyz
    system.url("scheduler")   # http://127.0.0.1:<port> of replica 0 (``replica=1`` for the second)
    system.kill("notifier-worker-1"); system.restart("notifier-worker-1")
    system.stop()

Each process runs as ``/bin/sh -c "exec <Procfile command>"`` in its own session, so the shell's
``${VAR:-default}`` expansion is the one honcho uses, and a signal reaches the real process. Web
replicas get their own ports (``<SERVICE>_PORT``); output goes to ``<log_dir>/<name>.log``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from shared.config import ROOT

SERVICES = ("inventory", "scheduler", "notifier")
PROCFILE = ROOT / "Procfile"


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for bind(0) or an outgoing
# connection can be taken by anyone between our check and the server's bind; these are taken only by
# whoever names them.
_PORTS = range(20000, 32000)


def free_port() -> int:
    """A port nothing listens on now, picked at random outside the ephemeral range."""
    for _ in range(100):
        port = random.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


#: Process groups started and not yet stopped: killed when this interpreter exits, so that a test run
#: that ends without its fixtures' teardown (an interrupted pytest) leaves no processes behind.
_RUNNING: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for group in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def procfile_entries(path: Path = PROCFILE) -> dict[str, str]:
    """``{"inventory-web": "<command>", ...}`` in the Procfile's order."""
    entries = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


@dataclass
class Process:
    """One running Procfile entry."""

    name: str  # the entry and the replica number, e.g. "notifier-worker-1"
    entry: str  # the Procfile entry, e.g. "notifier-worker"
    command: str
    env: dict[str, str]
    log_path: Path
    port: int | None = None  # web processes only
    popen: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def service(self) -> str:
        return self.entry.split("-")[0]

    @property
    def is_web(self) -> bool:
        return self.entry.endswith("-web")

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts + 1}: {self.command}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", "exec " + self.command], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        _RUNNING.add(self.popen.pid)
        self.starts += 1

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process and whatever it forked (gunicorn's workers): no chance to clean up."""
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._forget()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if not self.alive:
            self._forget()
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        else:
            # gunicorn's workers leave with their master; anything left of the group goes now.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self._forget()

    def _forget(self) -> None:
        if self.popen is not None:
            _RUNNING.discard(self.popen.pid)

    def pids(self) -> list[int]:
        """The process and its children (a gunicorn master and its workers)."""
        if not self.alive:
            return []
        children = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout.split()
        return [self.pid, *map(int, children)]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class System:
    """Every process of the Procfile, ``replicas`` times each, with one environment."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, replicas: int = 1, web_workers: int = 2,
                 entries: list[str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **env, "WEB_WORKERS": str(web_workers), "PYTHONUNBUFFERED": "1"}
        # The venv's python and gunicorn are the Procfile's (.venv/bin/...); the tests may run another one.
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        wanted = procfile_entries()
        if entries is not None:
            wanted = {name: wanted[name] for name in entries}
        self.processes: dict[str, Process] = {}
        for replica in range(1, replicas + 1):
            for entry, command in wanted.items():
                name = f"{entry}-{replica}"
                process_env = dict(self.env)
                port = None
                if entry.endswith("-web"):
                    port = free_port()
                    process_env[f"{entry.split('-')[0].upper()}_PORT"] = str(port)
                    process_env[f"{entry.split('-')[0].upper()}_HOST"] = "127.0.0.1"
                self.processes[name] = Process(name, entry, command, process_env, self.log_dir / f"{name}.log", port)
        # Services find the inventory (token issuer, JWKS) at its first replica.
        first = self.processes.get("inventory-web-1")
        if first is not None and "INVENTORY_URL" not in env:
            for process in self.processes.values():
                process.env["INVENTORY_URL"] = f"http://127.0.0.1:{first.port}"

    # -- lifecycle ----------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring every service's database to the head revision, as `make run` does before it starts."""
        for service in SERVICES:
            result = subprocess.run([sys.executable, "-m", f"services.{service}.manage", "migrate"], cwd=ROOT,
                                    env=self.env, capture_output=True, text=True, timeout=180)
            if result.returncode != 0:
                raise RuntimeError(f"{service} migrate failed:\n{result.stdout}\n{result.stderr}")

    def start(self, timeout: float = 60) -> None:
        for process in self.processes.values():
            process.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
        for process in self.processes.values():
            process.stop(timeout=15)

    def __enter__(self) -> System:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test does to it ---------------------------------------------------------------------

    def url(self, service: str, replica: int = 1) -> str:
        return f"http://127.0.0.1:{self.processes[f'{service}-web-{replica}'].port}"

    def urls(self, service: str) -> list[str]:
        return [f"http://127.0.0.1:{p.port}" for p in self.of(f"{service}-web")]

    def of(self, entry: str) -> list[Process]:
        """Every replica of a Procfile entry."""
        return [p for p in self.processes.values() if p.entry == entry]

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str, timeout: float = 60) -> None:
        process = self.processes[name]
        process.stop()
        process.start()
        if process.is_web:
            self._wait_web(process, time.monotonic() + timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            if process.is_web:
                self._wait_web(process, deadline)
        # Workers have no port: they must at least still be running after the webs came up.
        for process in self.processes.values():
            if not process.alive:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")

    def _wait_web(self, process: Process, deadline: float) -> None:
        url = f"http://127.0.0.1:{process.port}/readyz"
        while True:
            if not process.alive:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not ready at {url}:\n{process.log_tail()}")
            time.sleep(0.2)

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of every process, in KiB: ``{"inventory-web-1": ..., "inventory-web-1 worker 2": ...}``
        (a gunicorn master first, then each of its workers)."""
        sizes = {}
        for process in self.processes.values():
            for index, pid in enumerate(process.pids()):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except FileNotFoundError:
                    continue
                match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
                label = process.name if index == 0 else f"{process.name} worker {index}"
                sizes[label] = int(match.group(1)) if match else 0
        return sizes

    def logs(self, lines: int = 40) -> str:
        """The end of every process's log, for a failing test's message."""
        return "\n".join(f"==> {p.name} <==\n{p.log_tail(lines)}" for p in self.processes.values())
