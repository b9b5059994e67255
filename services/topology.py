"""The system's queues: every consumer's queue and the events it is bound to.

Every worker declares all of them at start (shared.messaging.topology.declare_topology), so the
order in which services are deployed or started never makes an event unroutable: it waits in its
consumer's queue. A queue's arguments cannot change in place; change a spec here with a new queue
name or a broker policy.
"""

from shared.messaging.topology import QueueSpec

#: The scheduler's read models: every inventory event.
SCHEDULER_INVENTORY = QueueSpec("scheduler.inventory", ["refstd.inventory.#"])

#: The notifier: everything it turns into a notice, and the organizations it sends to.
NOTIFIER_EVENTS = QueueSpec("notifier.events", ["refstd.scheduler.#", "refstd.inventory.organization.*"])

#: The notifier's own events (notification.sent / notification.failed): an audit trail for whoever
#: wants to read it. Nothing has to consume it, so it is bounded (the oldest are dropped past
#: 100,000) and needs no retry tiers; without a bound queue these events would be unroutable and the
#: relay would retry them forever.
NOTIFIER_AUDIT = QueueSpec("notifier.audit", ["refstd.notifier.#"], retry_delays_ms=(), max_length=100_000)

ALL_QUEUES = (SCHEDULER_INVENTORY, NOTIFIER_EVENTS, NOTIFIER_AUDIT)
