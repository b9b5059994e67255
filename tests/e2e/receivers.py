"""The other ends of the notifier: a real SMTP server (aiosmtpd) and a real webhook receiver that
verifies every Standard Webhooks signature. Both count what arrives by its id (Message-ID, webhook-id),
so a test can tell "delivered once" from "delivered again" from "never delivered"."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

from scripts.system import free_port


class SmtpSink:
    """An SMTP server in this process; ``stop()`` and ``start()`` again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler protocol
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self, to: str | None = None) -> list[email.message.EmailMessage]:
        with self._lock:
            return [m for m in self.messages if to is None or to in str(m["To"])]

    def counts(self, to: str | None = None) -> Counter:
        """How many times each Message-ID arrived (only messages to ``to``, if given, as in ``received``)."""
        return Counter(str(m["Message-ID"]) for m in self.received(to))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The notifier connects up to 8 at a time per worker: the default listen backlog (5) drops the rest
    # of the SYNs, which the client sends again only after a second.
    request_queue_size = 128


class WebhookReceiver:
    """An HTTP server in this process; ``add(path, secret)`` before deliveries to that path arrive.

    Every POST is verified with the path's secret (``standardwebhooks``); a bad signature is answered
    401 and counted in ``rejected``. A request whose body ends before its Content-Length (the sender
    died mid-request) is no delivery: it is counted in ``cut_short`` and not answered. ``failing = True``
    answers 503 to everything until set back.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.deliveries: list[dict] = []
        self.rejected: list[dict] = []
        self.cut_short: list[dict] = []
        self.failing = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server protocol
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    with receiver._lock:
                        receiver.cut_short.append({"path": self.path, "id": self.headers.get("webhook-id"),
                                                   "at": time.time()})
                    self.close_connection = True
                    return
                status = receiver._receive(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                return

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def add(self, path: str, secret: str) -> None:
        self.secrets[path] = secret

    def _receive(self, path: str, headers: dict, body: bytes) -> int:
        lowered = {k.lower(): v for k, v in headers.items()}
        record = {"path": path, "id": lowered.get("webhook-id"), "at": time.time()}
        if self.failing:
            return 503
        try:
            Webhook(self.secrets[path]).verify(body, lowered)
        except Exception as exc:  # noqa: BLE001 - any failure to verify is a rejected delivery
            with self._lock:
                self.rejected.append({**record, "error": repr(exc)})
            return 401
        record["event"] = json.loads(body)
        with self._lock:
            self.deliveries.append(record)
        return 204

    def received(self, path: str | None = None, type_suffix: str = "") -> list[dict]:
        with self._lock:
            return [d["event"] for d in self.deliveries
                    if (path is None or d["path"] == path) and d["event"]["type"].endswith(type_suffix)]

    def counts(self, path: str | None = None) -> Counter:
        """How many times each webhook-id arrived (verified; only at ``path``, if given)."""
        with self._lock:
            return Counter(d["id"] for d in self.deliveries if path is None or d["path"] == path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

