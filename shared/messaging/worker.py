"""A small runner for a worker process: relays and consumers, one thread (and connection) each.

    run_components([OutboxRelay(...), Consumer(...)], settings.amqp_url)

SIGTERM or SIGINT sets the shared stop event: consumers finish the message in hand, relays finish
the batch in hand, every connection is closed, and the process exits 0. If a component dies of an
error it cannot recover from (e.g. the broker refuses its topology), the others are stopped too and
the process exits 1, so the process supervisor notices.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .connection import broker_reachable, redact_url
from .topology import declare_topology

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    """Anything the runner can run: a name and a blocking ``run(stop)`` that returns once stopped."""

    name: str

    def run(self, stop: threading.Event) -> None: ...


def run_components(
    components: Sequence[Component],
    amqp_url: str,
    *,
    stop: threading.Event | None = None,
    install_signal_handlers: bool = True,
    queues: Sequence = (),
) -> None:
    """Run every component in its own thread until SIGTERM/SIGINT (or ``stop``) and join them.

    ``queues``: the system's queue registry, declared before anything runs. Exits the process with
    status 1 (one line on stderr, no traceback) if the broker is not reachable, and with status 1
    after stopping everything if a component failed.
    """
    if not broker_reachable(amqp_url):
        print(
            f"RabbitMQ is not reachable at {redact_url(amqp_url)}: start it with `rabbitmq-server -detached`",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)
    if queues:
        declare_topology(amqp_url, queues)

    stop = stop or threading.Event()
    failed: list[str] = []

    def target(component: Component) -> None:
        try:
            component.run(stop)
        except BaseException:
            log.exception("%s failed; stopping the worker", component.name)
            failed.append(component.name)
            stop.set()

    previous = {}
    if install_signal_handlers and threading.current_thread() is threading.main_thread():

        def on_signal(signum, _frame) -> None:
            if stop.is_set():
                log.info("%s again: still stopping", signal.Signals(signum).name)
            else:
                log.info("%s: stopping", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)

    threads = [threading.Thread(target=target, args=(component,), name=str(component.name)) for component in components]
    try:
        for thread in threads:
            thread.start()
        # Join in short slices so that the main thread keeps running the signal handlers.
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed:
        raise SystemExit(1)
