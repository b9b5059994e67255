"""The worker runner, in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_unreachable_broker_prints_one_line_and_exits_non_zero():
    proc = python(
        """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG)
        from shared.messaging.worker import run_components
        run_components([], sys.argv[1])
        """,
        "amqp://guest:s3cret@127.0.0.1:1/%2F",
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert lines == [
        "RabbitMQ is not reachable at amqp://guest@127.0.0.1:1/%2F: start it with `rabbitmq-server -detached`"
    ]
    assert "s3cret" not in err


WORKER = """
    import logging, sys, threading
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from shared.messaging.worker import run_components

    lock = threading.Lock()

    def say(text):
        with lock:
            sys.stdout.write(text + "\\n")
            sys.stdout.flush()

    class Component:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail
        def run(self, stop):
            say(self.name + " running")
            if self.fail:
                raise RuntimeError("broken component")
            stop.wait()
            say(self.name + " stopped")

    run_components([Component("a"), Component("b", fail=sys.argv[2] == "fail")], sys.argv[1])
    say("clean exit")
"""


def test_sigterm_stops_every_component_and_exits_zero(amqp_url):
    proc = python(WORKER, amqp_url, "ok")
    started = []
    deadline = time.monotonic() + 20
    while len(started) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        started.append(line.strip())
    assert sorted(started) == ["a running", "b running"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(out.split("\n")) == ["", "a stopped", "b stopped", "clean exit"]


def test_a_failing_component_stops_the_worker_with_status_1(amqp_url):
    proc = python(WORKER, amqp_url, "fail")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "a stopped" in out and "clean exit" not in out
    assert "broken component" in err
