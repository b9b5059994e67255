"""Per-request context that infrastructure needs without depending on Flask."""

from __future__ import annotations

from contextvars import ContextVar

# The X-Request-ID of the HTTP request (or the event being handled): carried into the events it
# causes as the CloudEvents `correlationid`.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
