"""The world every case of the matrix runs in: the three services in-process, one database each, with two
organizations (a and b) that own one resource of every kind, and the institute's standards.

Everything is made the way clients make it, through the services' APIs (the institute's clients for
the inventory, partner clients for their bookings and webhooks); the scheduler and the notifier learn
about organizations, standards and bookings from the events the other services recorded, handed to
their consumers' handlers. The seeded rows of each database are then kept (:class:`Snapshot`) and
written back after any request that may have changed them, so every case sees the same world.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import MetaData, inspect, select, update

from services.inventory import models as inventory_models
from services.inventory.app import create_app as create_inventory
from services.inventory.domain import credit_code_check_char
from services.inventory.manage import prepare_database as prepare_inventory
from services.notifier import events as notifier_events
from services.notifier import models as notifier_models
from services.notifier.app import create_app as create_notifier
from services.notifier.manage import prepare_database as prepare_notifier
from services.scheduler import events as scheduler_events
from services.scheduler import models as scheduler_models
from services.scheduler.app import create_app as create_scheduler
from services.scheduler.manage import prepare_database as prepare_scheduler
from shared.auth import TokenSigner, private_pem, public_pem
from shared.config import Settings
from shared.db import Database
from shared.messaging.inbox import claim
from tests.integration.authorization.matrix import API, Caller
from tests.support import read_outbox

INSTITUTE_TZ = "Asia/Shanghai"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
BOOTSTRAP = ("matrix-bootstrap-admin", "matrix-bootstrap-secret")
# A public address (the notifier refuses private ones): nothing is delivered, no dispatcher runs here.
WEBHOOK_URL = "https://93.184.216.34/hooks/refstd"
METADATA = {"inventory": inventory_models.Base.metadata, "scheduler": scheduler_models.Base.metadata,
            "notifier": notifier_models.Base.metadata}
# Brings an empty database to the service's schema (migrated_database_factory's ``prepare``).
PREPARE = {"inventory": prepare_inventory, "scheduler": prepare_scheduler, "notifier": prepare_notifier}
_PLACEHOLDER = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def create_apps(databases: dict[str, Database], signing_key: Ed25519PrivateKey) -> dict[str, Flask]:
    """The three services as their tests build them: the inventory signs tokens with ``signing_key``,
    the scheduler and the notifier verify them with its public key."""
    inventory = Settings("inventory", database_url=databases["inventory"].url, amqp_url=AMQP_URL,
                         institute_tz=INSTITUTE_TZ)
    inventory.jwt_private_key = private_pem(signing_key)
    inventory.bootstrap_client_id, inventory.bootstrap_client_secret = BOOTSTRAP
    apps = {"inventory": create_inventory(inventory, databases["inventory"])}
    for name, create in (("scheduler", create_scheduler), ("notifier", create_notifier)):
        settings = Settings(name, database_url=databases[name].url, amqp_url=AMQP_URL, institute_tz=INSTITUTE_TZ)
        settings.jwt_public_key = public_pem(signing_key)
        settings.bootstrap_client_id = settings.bootstrap_client_secret = None
        apps[name] = create(settings, databases[name])
    for app in apps.values():
        app.testing = True
    return apps


class Snapshot:
    """Every row of a service's tables, written back by :meth:`restore` in one transaction.

    Far cheaper than a new database per case on either backend, and the same code for both.
    """

    def __init__(self, database: Database, metadata: MetaData) -> None:
        self.database = database
        self.tables = metadata.sorted_tables
        stored = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
        unknown = stored - {table.name for table in self.tables}
        assert not unknown, f"tables the snapshot would not restore: {sorted(unknown)}"
        with database.engine.connect() as conn:
            self.rows = {table: [dict(row) for row in conn.execute(select(table)).mappings()]
                         for table in self.tables}

    def restore(self) -> None:
        with self.database.engine.begin() as conn:
            for table in reversed(self.tables):
                conn.execute(table.delete())
            for table in self.tables:
                if self.rows[table]:
                    conn.execute(table.insert(), self.rows[table])


class Tokens:
    """Bearer tokens as the inventory issues them, and a forged one (signed with a key nobody trusts)."""

    def __init__(self, signing_key: Ed25519PrivateKey) -> None:
        self._signer = TokenSigner(signing_key)
        self._forger = TokenSigner(Ed25519PrivateKey.generate())

    def headers(self, role: str, organization_id: str | None = None, client_id: str | None = None) -> dict:
        signer = self._forger if role == "bad" else self._signer
        claimed = "admin" if role == "bad" else role
        # Each organization's client has its own id, as the issuer's clients do.
        client_id = client_id or f"matrix-{role}" + (f"-{organization_id[:8]}" if organization_id else "")
        token = signer.issue(client_id, claimed, organization_id)
        return {"Authorization": f"Bearer {token}"}


@dataclass
class Service:
    name: str
    app: Flask
    database: Database
    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        self.client = self.app.test_client()


class World:
    """The seeded services, the ids of what was seeded, and the tokens of every caller."""

    bootstrap = BOOTSTRAP
    webhook_url = WEBHOOK_URL

    def __init__(self, apps: dict[str, Flask], databases: dict[str, Database], tokens: Tokens) -> None:
        self.services = {name: Service(name, apps[name], databases[name]) for name in apps}
        self.tokens = tokens
        self.today = dt.datetime.now(ZoneInfo(INSTITUTE_TZ)).date()
        self.ids: dict[str, str] = {}

    # -- what rows and calls need ------------------------------------------------------------------

    @property
    def organization_a(self) -> str:
        return self.ids["organization"]

    @property
    def organization_b(self) -> str:
        return self.ids["other_organization"]

    def organization_of(self, caller: Caller) -> str | None:
        """The organization a caller's token names: a (the owner of what the paths name) or b."""
        return {"own": self.organization_a, "other": self.organization_b}.get(caller.side)

    def whose(self, organization_id: str | None) -> str:
        """Whose items these are, for messages."""
        names = {self.organization_a: "organization a's", self.organization_b: "organization b's"}
        return names.get(organization_id, f"{organization_id}'s")

    def purpose_of(self, organization_id: str) -> str:
        """The purpose of the organization's booking: what the calendar feed shows only to it and the
        institute."""
        return f"膜材料透气性测试 ({organization_id[:8]})"

    def headers(self, caller: Caller) -> dict:
        if caller.role is None:
            return {}
        return self.tokens.headers(caller.role, self.organization_of(caller))

    def date(self, days: int) -> str:
        """Today + ``days`` (institute time) as the API writes dates."""
        return (self.today + dt.timedelta(days=days)).isoformat()

    def at(self, days: int, hour: int) -> str:
        """``hour`` o'clock, ``days`` from today, institute time, with its offset."""
        return f"{self.date(days)}T{hour:02d}:00:00+08:00"

    def path(self, rule: str, params: dict[str, str], *, unknown: bool = False) -> str:
        """The rule with each ``<name_id>`` replaced by the id of the seeded resource ``name`` (or the one
        ``params`` names); with ``unknown``, by an id that names nothing."""
        if unknown:
            return _PLACEHOLDER.sub(lambda _: str(uuid.uuid4()), rule)
        return _PLACEHOLDER.sub(
            lambda m: self.ids[params.get(m.group(1), m.group(1).removesuffix("_id"))], rule)

    def restore(self, service: str) -> None:
        self.services[service].snapshot.restore()

    # -- seeding ---------------------------------------------------------------------------------

    def _request(self, service: str, method: str, path: str, role: str, organization_id: str | None = None,
                 expect: int = 201, **kwargs) -> dict:
        response = self.services[service].client.open(
            API + path, method=method, headers=self.tokens.headers(role, organization_id), **kwargs)
        assert response.status_code == expect, (service, method, path, response.get_json())
        return response.get_json()

    def _inventory(self, path: str, body: dict) -> str:
        return self._request("inventory", "POST", path, "admin", json=body)["id"]

    def seed(self) -> None:
        ids = self.ids
        for name, digits in (("organization", "91370303MA3MX0001"), ("other_organization", "91370303MA3MX0002")):
            ids[name] = self._inventory("/organizations", {
                "name": f"淄博示例{'甲' if name == 'organization' else '乙'}氢能材料有限公司", "kind": "enterprise",
                "credit_code": digits + credit_code_check_char(digits), "alliance_member": True,
                "contacts": [{"name": "王工", "email": f"{name}@example.com", "locale": "zh-CN"}]})
        ids["client"] = self._request("inventory", "POST", "/clients", "admin", json={
            "name": "甲公司设备管理系统", "role": "enterprise", "organization_id": ids["organization"]})["client_id"]
        for name, code, public in (("standard", "MX-F-001", True), ("private_standard", "MX-F-002", False)):
            ids[name] = self._inventory("/standards", {
                "code": code, "name": "气体流量标准装置", "discipline": "mechanical", "measurand": "gas flow",
                "range": {"min": 0.1, "max": 100, "unit": "m^3/h"}, "public": public, "bookable": True,
                "assessment_certificate": {"number": f"[2024]鲁量标淄证字第{code}号", "issued_on": self.date(-100)},
                "custodian": {"name": "李工", "email": "li@example.com"}})
        standard = ids["standard"]
        ids["equipment"] = self._inventory(f"/standards/{standard}/equipment", {
            "role": "main", "name": "音速喷嘴", "serial_number": "MX-MAIN-1", "calibration_interval_months": 12})
        ids["calibration"] = self._inventory(f"/equipment/{ids['equipment']}/calibrations", {
            "calibrated_on": self.date(-30), "result": "pass", "certificate_number": "JZ-2026-0001"})
        ids["check"] = self._inventory(f"/standards/{standard}/checks", {
            "kind": "stability", "performed_on": self.date(-20), "value": 0.01, "limit": 0.05, "unit": "%"})
        for name, organization in (("instrument", "organization"), ("other_instrument", "other_organization")):
            ids[name] = self._inventory("/instruments", {
                "organization_id": ids[organization], "name": "一般压力表", "category": "pressure gauge",
                "serial_number": f"MX-P-{name}", "interval_months": 6, "mandatory": True,
                "regulation": "JJG 52-2013"})
        ids["verification"] = self._inventory(f"/instruments/{ids['instrument']}/verifications", {
            "verified_on": self.date(-10), "result": "pass", "certificate_number": "JD-2026-0001"})
        self._relay("inventory")

        for name, organization, day in (("booking", "organization", 10), ("other_booking", "other_organization", 11)):
            ids[name] = self._request("scheduler", "POST", "/bookings", "partner", ids[organization], json={
                "standard_id": standard, "starts_at": self.at(day, 9), "ends_at": self.at(day, 12),
                "purpose": self.purpose_of(ids[organization])})["id"]
        for name, standard_name in (("blackout", "standard"), ("private_blackout", "private_standard")):
            ids[name] = self._request("scheduler", "POST", f"/standards/{ids[standard_name]}/blackouts", "lab_staff",
                                      json={"starts_at": self.at(12, 8), "ends_at": self.at(12, 18),
                                            "reason": "期间核查"})["id"]
        for name, organization in (("webhook", "organization"), ("other_webhook", "other_organization")):
            ids[name] = self._request("notifier", "POST", "/webhooks", "partner", ids[organization], json={
                "url": WEBHOOK_URL, "event_types": ["refstd.scheduler.booking.*"]})["id"]
        ids["institute_webhook"] = self._request("notifier", "POST", "/webhooks", "admin", json={
            "url": WEBHOOK_URL, "event_types": ["refstd.scheduler.#"]})["id"]  # every organization's events
        self._relay("scheduler")
        self._pick_notifications()
        for service in self.services.values():
            service.snapshot = Snapshot(service.database, METADATA[service.name])

    def _relay(self, source: str) -> None:
        """Hand every event ``source`` recorded to the consumers that subscribe to it, each in its inbox
        transaction as the consumer does."""
        outbox = {"inventory": inventory_models.OutboxMessage, "scheduler": scheduler_models.OutboxMessage}[source]
        consumers = [("notifier", notifier_models.InboxMessage, notifier_events.CONSUMER,
                      notifier_events.handler_for)]
        if source == "inventory":
            consumers.append(("scheduler", scheduler_models.InboxMessage, "scheduler.inventory",
                              scheduler_events.INVENTORY_HANDLERS.get))
        for event in read_outbox(self.services[source].database, outbox):
            for service, inbox, consumer, handler_for in consumers:
                handler = handler_for(event["type"])
                if handler is None:
                    continue
                with self.services[service].database.transaction() as session:
                    if claim(session, inbox, event["id"], consumer):
                        handler(session, event)

    def _pick_notifications(self) -> None:
        """One email notification of each organization; organization a's failed, as a retry expects."""
        Notification = notifier_models.Notification
        database = self.services["notifier"].database
        with database.transaction() as session:
            for name, organization in (("notification", "organization"),
                                       ("other_notification", "other_organization")):
                self.ids[name] = session.scalars(
                    select(Notification.id).where(Notification.organization_id == self.ids[organization],
                                                  Notification.channel == "email")
                    .order_by(Notification.id)).first()
                assert self.ids[name], f"the booking of {organization} notified nobody of it"
            session.execute(update(Notification).where(Notification.id == self.ids["notification"])
                            .values(status="failed", attempts=1, last_error="550 mailbox unavailable"))
