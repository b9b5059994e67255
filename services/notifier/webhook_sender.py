"""The webhook channel: POSTs each notification's CloudEvent, signed per Standard Webhooks, to its endpoint.

Per delivery: the endpoint is read afresh (a deleted one is a permanent failure), its URL is checked
again by the SSRF guard (DNS may have changed since registration) and the connection goes to one of
the addresses that check approved, with the URL's host in ``Host`` and in TLS SNI and certificate
verification — so a DNS answer that changes between the check and the connect cannot redirect the
request. Redirects are never followed (the target of one was never checked) and environment proxies
are not used (http.client ignores them). The body is the CloudEvent JSON, signed byte for byte;
``webhook-id`` is the CloudEvent id, the same on every retry, so receivers deduplicate by it.

Outcomes: 2xx is delivered; any other status, a timeout, or a connection or TLS failure is retryable;
410 Gone is permanent (the receiver says the endpoint no longer exists), as are a deleted endpoint and
a URL that the guard now refuses. A batch's deliveries run in parallel on a bounded thread pool, each
within its own time limits, so a slow receiver holds back neither the others nor email.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from sqlalchemy import select

from services.notifier.models import Notification, WebhookEndpoint
from services.notifier.senders import Outcome
from services.notifier.webhooks import USER_AGENT, check_url, private_addresses_allowed, signature_headers
from shared.db import Database
from shared.messaging.envelope import CONTENT_TYPE, encode

DEFAULT_TIMEOUT = (3.0, 10.0)  # seconds: connect (all addresses together), then request and response
MAX_WORKERS = 8
ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class _Delivery:
    notification_id: str
    event: dict
    endpoint_id: str | None


@dataclass(frozen=True)
class _Endpoint:
    id: str
    url: str
    secret: str
    active: bool


class _Timeout(Exception):
    pass


class WebhookSender:
    """``Sender`` of the webhook channel (services/notifier/senders.py)."""

    channel = "webhook"

    def __init__(self, database: Database, allow_private: bool = False,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, max_workers: int = MAX_WORKERS,
                 owns_database: bool = False, tls_context: ssl.SSLContext | None = None) -> None:
        self.database = database
        self.allow_private = allow_private
        self.connect_timeout, self.read_timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="webhook-send")
        self._owns_database = owns_database
        # The system's CAs and host-name checking; another context only for a private CA (or tests).
        self._tls = tls_context or ssl.create_default_context()

    @classmethod
    def from_settings(cls, settings, database: Database | None = None, **kwargs) -> WebhookSender:
        """A sender for the service's settings (WEBHOOK_ALLOW_PRIVATE), on ``database`` or its own."""
        owns = database is None
        database = database or Database(settings.database_url)
        return cls(database, allow_private=private_addresses_allowed(settings), owns_database=owns, **kwargs)

    def send(self, notifications: list[Notification]) -> list[Outcome]:
        """Deliver each notification to its endpoint; outcomes in the same order. Never raises."""
        outcomes: list[Outcome | None] = [None] * len(notifications)
        for index, outcome in self.send_each(notifications):
            outcomes[index] = outcome
        return outcomes

    def send_each(self, notifications: list[Notification]) -> Iterator[tuple[int, Outcome]]:
        """Deliver each notification to its endpoint, yielding ``(index, outcome)`` as each delivery ends
        (in the order they end). Never raises."""
        deliveries: list[_Delivery | Outcome] = []
        for notification in notifications:
            try:  # read in the caller's thread: ORM objects are not for sharing across threads
                deliveries.append(_Delivery(notification.id, dict(notification.event),
                                            notification.endpoint_id or notification.recipient))
            except Exception as exc:  # noqa: BLE001 - one unreadable notification fails alone
                deliveries.append(Outcome(ok=False, error=f"unreadable notification: {exc}", retryable=False))
        wanted = {d.endpoint_id for d in deliveries if isinstance(d, _Delivery) and d.endpoint_id}
        try:
            endpoints = self._endpoints(wanted)
        except Exception as exc:  # noqa: BLE001 - the database may be away; try again later
            failure = Outcome(ok=False, error=_short(f"webhook endpoints could not be read: {exc}"))
            yield from ((i, d if isinstance(d, Outcome) else failure) for i, d in enumerate(deliveries))
            return
        futures = {self._pool.submit(self._deliver, d, endpoints.get(d.endpoint_id)): index
                   for index, d in enumerate(deliveries) if isinstance(d, _Delivery)}
        yield from ((i, d) for i, d in enumerate(deliveries) if isinstance(d, Outcome))
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._owns_database:
            self.database.dispose()

    def _endpoints(self, ids: set[str]) -> dict[str, _Endpoint]:
        if not ids:
            return {}
        with self.database.Session() as session:
            rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids))).all()
            return {row.id: _Endpoint(row.id, row.url, row.secret, row.active) for row in rows}

    def _deliver(self, delivery: _Delivery, endpoint: _Endpoint | None) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self._attempt(delivery, endpoint)
        except Exception as exc:  # noqa: BLE001 - a delivery never takes the batch down
            outcome = Outcome(ok=False, error=_short(f"{type(exc).__name__}: {exc}"))
        elapsed = int((time.monotonic() - started) * 1000)
        return Outcome(ok=outcome.ok, error=outcome.error, status_code=outcome.status_code,
                       retryable=outcome.retryable, duration_ms=elapsed)

    def _attempt(self, delivery: _Delivery, endpoint: _Endpoint | None) -> Outcome:
        if endpoint is None or not endpoint.active:
            return Outcome(ok=False, error="endpoint deleted", retryable=False)
        target = check_url(endpoint.url, self.allow_private)
        if target.problem:
            return Outcome(ok=False, error=f"URL refused at delivery: {target.problem}",
                           retryable=target.temporary)
        body = encode(delivery.event)
        try:
            signed = signature_headers(endpoint.secret, str(delivery.event["id"]), body, int(time.time()))
        except Exception as exc:  # noqa: BLE001 - a corrupt secret cannot heal by retrying
            return Outcome(ok=False, error=f"endpoint secret unusable: {exc}", retryable=False)
        headers = {"Host": target.host_header, "Content-Type": f"{CONTENT_TYPE}; charset=utf-8",
                   "User-Agent": USER_AGENT, "Connection": "close", **signed}
        try:
            status, text = self._post(target, body, headers)
        except _Timeout as exc:
            return Outcome(ok=False, error=str(exc))
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(ok=False, error=_short(f"connection failed: {type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return Outcome(ok=True, status_code=status)
        detail = f"HTTP {status}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            detail += " (redirects are not followed: register the final URL)"
        return Outcome(ok=False, error=_short(detail), status_code=status, retryable=status != 410)

    def _post(self, target, body: bytes, headers: dict) -> tuple[int, str]:
        sock = self._connect(target)
        aborted = threading.Event()

        def abort() -> None:  # a receiver trickling its answer byte by byte still ends at the deadline
            aborted.set()
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

        timer = threading.Timer(self.read_timeout, abort)
        timer.daemon = True
        connection = http.client.HTTPConnection(target.host, target.port, timeout=self.read_timeout)
        connection.sock = sock  # already connected (and TLS-wrapped) to the checked address
        timer.start()
        try:
            connection.request("POST", target.target, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read(ERROR_BODY_CHARS * 4) if not 200 <= response.status < 300 else b""
            return response.status, _printable(text)
        except TimeoutError as exc:
            raise _Timeout(f"timed out: no answer within {self.read_timeout:g} s") from exc
        except (OSError, http.client.HTTPException):
            if aborted.is_set():
                raise _Timeout(f"timed out: the answer took longer than {self.read_timeout:g} s") from None
            raise
        finally:
            timer.cancel()
            connection.close()

    def _connect(self, target) -> socket.socket:
        """A connection to the first reachable checked address, all within the connect timeout."""
        deadline = time.monotonic() + self.connect_timeout
        failure: Exception | None = None
        for address in target.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                sock = socket.create_connection((address, target.port), timeout=remaining)
            except OSError as exc:
                failure = exc
                continue
            try:
                if target.scheme == "https":
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    sock = self._tls.wrap_socket(sock, server_hostname=target.host)
                sock.settimeout(self.read_timeout)
                return sock
            except ssl.SSLError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                failure = exc
        if isinstance(failure, TimeoutError) or failure is None:
            raise _Timeout(f"timed out: could not connect within {self.connect_timeout:g} s")
        raise failure


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _short(text: str, limit: int = ERROR_BODY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

