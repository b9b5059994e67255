"""What a channel's sender is: the dispatcher hands it due notifications, it delivers them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from services.notifier.models import Notification


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt."""

    ok: bool
    error: str | None = None
    status_code: int | None = None
    # False: retrying cannot help (e.g. a webhook URL now resolving to a private address): dead at once.
    retryable: bool = True
    duration_ms: int | None = None


class Sender(Protocol):
    channel: str  # "email" | "webhook"

    def send(self, notifications: list[Notification]) -> list[Outcome]:
        """Deliver each notification (one batch may share one connection); outcomes in the same order.

        Called outside any database transaction; must not raise for a single bad notification.
        """
        ...

    def close(self) -> None:
        """Release connections held between batches."""
        ...


class StreamingSender(Sender, Protocol):
    """A sender that can report each outcome as soon as it has it: the dispatcher then records each
    delivery at once, so a worker that dies mid-batch sends again only what was in hand."""

    def send_each(self, notifications: list[Notification]) -> Iterator[tuple[int, Outcome]]:
        """Deliver each notification, yielding ``(index in notifications, outcome)`` as each is done."""
        ...
