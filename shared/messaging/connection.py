"""AMQP connections: explicit parameters, reachability check, reconnect backoff (rule 6).

pika is imported by ``shared.messaging`` only. Connections are not thread-safe: open one per
thread, inside that thread, and never before a fork.
"""

from __future__ import annotations

import random
import socket
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import pika

#: Set explicitly because pika's defaults are unsafe for a long-running worker (no
#: blocked-connection timeout: a broker under a memory alarm hangs the client forever; one
#: connection attempt). A value given in the URL's query string wins.
DEFAULTS: dict[str, float | int] = {
    "heartbeat": 30,
    "blocked_connection_timeout": 60.0,
    "connection_attempts": 3,
    "retry_delay": 1.0,
    "socket_timeout": 5.0,
    "stack_timeout": 10.0,
}


class MessagingSetupError(RuntimeError):
    """The broker refused the topology or the permissions at setup: a deployment problem that
    retrying will not fix (e.g. a queue redeclared with different arguments)."""


def connection_parameters(url: str, *, name: str | None = None) -> pika.URLParameters:
    """``pika.URLParameters`` for ``url`` with heartbeat, timeouts and retries set explicitly.

    ``name`` is shown as the connection name in ``rabbitmqctl list_connections client_properties``.
    """
    params = pika.URLParameters(url)
    given = {key for key, _ in parse_qsl(urlsplit(url).query)}
    for key, value in DEFAULTS.items():
        if key not in given:
            setattr(params, key, value)
    if name:
        properties = dict(params.client_properties or {})
        properties.setdefault("connection_name", name)
        params.client_properties = properties
    return params


def connect(url: str, *, name: str | None = None) -> pika.BlockingConnection:
    """A blocking connection for the calling thread."""
    return pika.BlockingConnection(connection_parameters(url, name=name))


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = quote(unquote(parts.username or ""), safe="")
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_reachable(url: str, timeout: float = 3) -> bool:
    """True if something accepts TCP connections at the broker's host and port.

    A plain TCP check: it neither authenticates nor logs through pika, so a worker can tell
    "RabbitMQ is not running" apart in one line before it opens real connections.
    """
    params = pika.URLParameters(url)
    try:
        with socket.create_connection((params.host, params.port), timeout=timeout):
            return True
    except OSError:
        return False


class Backoff:
    """Exponential backoff with jitter, capped: ``initial * factor**n``, at most ``maximum``.

    Each delay is drawn uniformly from the upper half of the current step ("equal jitter"), so
    replicas that lost the broker together do not reconnect in lockstep.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        step = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return step / 2 + random.uniform(0, step / 2)

    def reset(self) -> None:
        self.failures = 0
