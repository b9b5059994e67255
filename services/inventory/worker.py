"""The inventory's worker process: ``python -m services.inventory.worker``.

It owns the AMQP connections: the outbox relay publishes every recorded event with publisher
confirms, and the retention component deletes sent rows after MESSAGE_RETENTION_DAYS. (The inventory
consumes no events yet.)
"""

from __future__ import annotations

from services.inventory.models import OutboxMessage
from services.topology import ALL_QUEUES
from shared.config import Settings
from shared.db import Database
from shared.logs import configure_logging
from shared.messaging.relay import OutboxRelay
from shared.messaging.retention import Retention
from shared.messaging.worker import run_components


def main() -> int:
    settings = Settings("inventory")
    configure_logging("inventory-worker", settings.log_level, settings.log_json)
    database = Database(settings.database_url)
    relay = OutboxRelay(database, OutboxMessage, settings.amqp_url, name="inventory.relay")
    retention = Retention(database, OutboxMessage, keep_days=settings.message_retention_days,
                          name="inventory.retention")
    run_components([relay, retention], settings.amqp_url, queues=ALL_QUEUES)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
