"""What a channel's sender is: the dispatcher hands it due notifications, it delivers them."""

from __future__ import annotations

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

    # Optional: ``send_each(notifications) -> Iterator[tuple[int, Outcome]]`` yields ``(index, outcome)`` as
    # each delivery is done, so the dispatcher records it at once and a worker that dies mid-batch sends
    # again only what was in hand. Both real senders have it; without it, outcomes come at the end.
