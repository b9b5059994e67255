"""The notifier's worker process: ``python -m services.notifier.worker``.

Runs, each in its own thread: the outbox relay (``notification.sent`` / ``notification.failed``), the
consumer of ``notifier.events`` (scheduler events -> notification rows; inventory organizations -> the
read model), one dispatcher per channel (email, webhook), so that a slow webhook receiver never
holds back email, and the retention of the outbox and inbox.
"""

from __future__ import annotations

from services.notifier import events
from services.notifier.delivery import Dispatcher
from services.notifier.models import InboxMessage, OutboxMessage
from services.notifier.senders import Sender
from services.topology import ALL_QUEUES
from shared.config import Settings
from shared.db import Database
from shared.logs import configure_logging
from shared.messaging.consumer import Consumer
from shared.messaging.relay import OutboxRelay
from shared.messaging.retention import Retention
from shared.messaging.worker import run_components

#: Webhooks go out in smaller batches than email: each delivery may wait on a slow receiver.
WEBHOOK_BATCH_SIZE = 20


def components(settings: Settings, database: Database, email_sender: Sender, webhook_sender: Sender) -> list:
    return [
        OutboxRelay(database, OutboxMessage, settings.amqp_url, name="notifier.relay"),
        Consumer(database, InboxMessage, settings.amqp_url, events.QUEUE, events.HANDLERS,
                 name=events.CONSUMER, schemas=events.NOTIFIER_SCHEMAS),
        Dispatcher(database, email_sender, channel="email", name="notifier.email",
                   claim_seconds=settings.email_claim_seconds),
        Dispatcher(database, webhook_sender, channel="webhook", name="notifier.webhook",
                   batch_size=WEBHOOK_BATCH_SIZE, claim_seconds=settings.webhook_claim_seconds),
        Retention(database, OutboxMessage, InboxMessage, keep_days=settings.message_retention_days,
                  name="notifier.retention"),
    ]


def main() -> int:
    from services.notifier.mail import EmailSender
    from services.notifier.webhook_sender import WebhookSender

    settings = Settings("notifier")
    configure_logging("notifier-worker", settings.log_level, settings.log_json)
    database = Database(settings.database_url)
    run_components(
        components(settings, database, EmailSender.from_settings(settings),
                   WebhookSender.from_settings(settings, database=database)),
        settings.amqp_url, queues=ALL_QUEUES,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
