"""The data the fuzzed services hold: the inventory's sample data set, and what the scheduler and the
notifier make of its events, so that generated ids can name real rows.

Each ``seed_*`` writes into a migrated, empty database and returns the rows a path can name, as
``{path parameter: id}`` dicts: one key for a top-level entity (``{"standard_id": ...}``), two for a
nested one (``{"standard_id": ..., "check_id": ...}``).
"""

from __future__ import annotations

from sqlalchemy import select

from services.inventory import demo as inventory_demo
from services.inventory.clients import ensure_bootstrap_admin, hash_secret
from services.inventory.models import (
    ApiClient,
    Calibration,
    Check,
    Equipment,
    Instrument,
    Organization,
    Standard,
    Verification,
)
from services.inventory.models import OutboxMessage as InventoryOutbox
from services.notifier import events as notifier_events
from services.notifier.models import KnownOrganization, Notification, WebhookEndpoint
from services.notifier.webhooks import new_secret
from services.scheduler import demo as scheduler_demo
from services.scheduler import events as scheduler_events
from services.scheduler.models import KnownStandard, Reservation
from services.scheduler.models import OutboxMessage as SchedulerOutbox
from services.scheduler.sweep import sweep_now
from shared.config import Settings
from shared.db import Database
from shared.timeutil import institute_today, utcnow
from tests.support import read_outbox

Rows = list[dict[str, str]]

BOOTSTRAP_CLIENT = ("fuzz-bootstrap-admin", "fuzz-bootstrap-secret")


def seed_inventory(database: Database) -> tuple[Rows, list[dict]]:
    """The sample data set, an admin and a partner API client; the rows and the events it published."""
    with database.transaction() as session:
        inventory_demo.load_demo_data(session, institute_today())
        ensure_bootstrap_admin(session, *BOOTSTRAP_CLIENT)
        university = session.scalars(select(Organization).where(Organization.kind == "university")
                                     .order_by(Organization.name)).first()
        session.add(ApiClient(id="fuzz-partner-client", name="partner", role="partner",
                              organization_id=university.id, secret_hash=hash_secret("fuzz-partner-secret")))
    with database.Session() as session:
        rows: Rows = [{"client_id": client_id} for client_id in session.scalars(select(ApiClient.id))]
        rows += [{"organization_id": id_} for id_ in session.scalars(select(Organization.id))]
        rows += [{"standard_id": id_} for id_ in session.scalars(select(Standard.id))]
        rows += [{"equipment_id": id_} for id_ in session.scalars(select(Equipment.id))]
        rows += [{"instrument_id": id_} for id_ in session.scalars(select(Instrument.id))]
        rows += [{"standard_id": s, "check_id": c} for s, c in session.execute(select(Check.standard_id, Check.id))]
        rows += [{"equipment_id": e, "calibration_id": c}
                 for e, c in session.execute(select(Calibration.equipment_id, Calibration.id))]
        rows += [{"instrument_id": i, "verification_id": v}
                 for i, v in session.execute(select(Verification.instrument_id, Verification.id))]
    return rows, read_outbox(database, InventoryOutbox)


def seed_scheduler(database: Database, settings: Settings, inventory_events: list[dict]) -> tuple[Rows, list[dict]]:
    """The read model fed with the inventory's events, the sample bookings and blackout, one due sweep;
    the rows and the events the scheduler published."""
    for event in inventory_events:
        handler = scheduler_events.INVENTORY_HANDLERS.get(event["type"])
        if handler is not None:
            with database.transaction() as session:
                handler(session, event)
    with database.transaction() as session:
        scheduler_demo.load_sample_bookings(session, utcnow(), settings.institute_tz)
    sweep_now(database, settings, trigger="manual")
    with database.Session() as session:
        rows: Rows = [{f"{kind}_id": id_} for kind, id_ in session.execute(select(Reservation.kind, Reservation.id))]
        rows += [{"standard_id": id_} for id_ in session.scalars(select(KnownStandard.id))]
    return rows, read_outbox(database, SchedulerOutbox)


def seed_notifier(database: Database, events: list[dict], partner_organization: str) -> Rows:
    """A webhook endpoint of the partner's organization and one of the institute, then the notifications
    of the given events by email and webhook (organization events feed the read model)."""
    with database.transaction() as session:
        for organization_id in (partner_organization, None):
            session.add(WebhookEndpoint(organization_id=organization_id, url="https://hooks.example.com/refstd",
                                        event_types=["refstd.scheduler.#"], secret=new_secret(), active=True,
                                        created_by="fuzz-seed"))
    for event in events:
        handler = notifier_events.handler_for(event["type"])
        if handler is not None:
            with database.transaction() as session:
                handler(session, event)
    with database.Session() as session:
        rows: Rows = [{"notification_id": id_} for id_ in session.scalars(select(Notification.id))]
        rows += [{"webhook_id": id_} for id_ in session.scalars(select(WebhookEndpoint.id))]
        rows += [{"organization_id": id_} for id_ in session.scalars(select(KnownOrganization.id))]
    return rows
