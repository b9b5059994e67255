"""Runs every benchmark and writes bench/RESULTS.md: the machine, then each benchmark's command and table.

    .venv/bin/python -m bench.report [--output bench/RESULTS.md]

This is `make bench`. Each benchmark runs as its own process with the command shown in the file, and
prints its table on its own too. A benchmark that fails is recorded as failed (with the end of its error
output), the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import psycopg

from bench.support import POSTGRES_URL, rabbitmqctl
from shared.config import ROOT

BENCHES = [
    ("Outbox relay vs raw pika, SQLite", ["bench.relay_throughput"]),
    ("Outbox relay vs raw pika, PostgreSQL", ["bench.relay_throughput", "--database-url", POSTGRES_URL]),
    ("Due sweep over 1,000,000 items vs the bare query",
     ["bench.sweep", "--items", "1000000", "--organizations", "10000", "--database-url", POSTGRES_URL]),
    ("Notifier vs raw consume", ["bench.notifier_throughput"]),
    ("HTTP: reading a standard and creating bookings vs a trivial endpoint, memory of every process",
     ["bench.http_throughput"]),
]


def _quiet(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return "unknown"


def _memory_gib() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
    return "unknown"


def _postgres_version() -> str:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return f"unreachable ({exc})"


def _rabbitmq_version() -> str:
    try:
        return rabbitmqctl("version").strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unreachable ({exc})"


def _source() -> str:
    commit = _quiet(["git", "rev-parse", "--short", "HEAD"])
    if not commit:
        return "unknown"
    changed = _quiet(["git", "status", "--porcelain", "--untracked-files=no"])
    return commit + (" with uncommitted changes" if changed else "")


def machine() -> list[tuple[str, str]]:
    return [
        ("cores (nproc)", str(len(os.sched_getaffinity(0)))),
        ("CPU", _cpuinfo("model name")),
        ("memory", _memory_gib()),
        ("OS", f"{platform.freedesktop_os_release().get('PRETTY_NAME', platform.system())}, "
               f"kernel {platform.release()}"),
        ("Python", platform.python_version()),
        ("PostgreSQL", _postgres_version()),
        ("RabbitMQ", _rabbitmq_version()),
        ("source", _source()),
    ]


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def display(module_args: list[str]) -> str:
    """The command as a person types it from the project's root."""
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return shlex.join([python, "-m", *module_args])


def run(module_args: list[str]) -> tuple[int, str, str, float]:
    """(exit status, standard output, end of the error output, seconds). The error output also goes to the
    terminal as it comes, so that a long benchmark shows its progress."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, stdout=stdout,
                                   stderr=subprocess.PIPE, text=True)
        stderr_lines: deque[str] = deque(maxlen=30)
        for line in process.stderr:
            sys.stderr.write(line)
            stderr_lines.append(line)
        status = process.wait()
        stdout.seek(0)
        output = stdout.read()
    return status, output, "".join(stderr_lines), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    sections = []
    failed = 0
    for title, module_args in BENCHES:
        command = display(module_args)
        print(f"==> {command}", flush=True)
        status, stdout, stderr_tail, seconds = run(module_args)
        print(stdout, flush=True)
        section = [f"## {title}", "", f"```\n{command}\n```", "",
                   f"Ran in {seconds:.0f} s, finished {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.", ""]
        if status == 0:
            section.append(stdout.strip())
        else:
            failed += 1
            section += [f"**Failed** with exit status {status}. The end of its error output:", "",
                        "```", stderr_tail.rstrip(), "```"]
        sections.append("\n".join(section))
    finished = dt.datetime.now(dt.UTC)

    rows = [*machine(),
            ("date", f"{started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC"),
            ("load average (1/5/15 min)", f"{load_before} before, {load_average()} after")]
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench.report`). Each benchmark compares the code with a",
        "baseline measured in the same run on the same machine (raw pika, a bare SQL statement, a trivial",
        "endpoint of the same server): the ratios are what carries over to another machine, the absolute",
        "figures are only this machine's. The machine is shared with other work, so figures vary between",
        "runs; the load average below shows how busy it was.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    args.output.write_text("\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {args.output}" + (f"; {failed} benchmark(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
