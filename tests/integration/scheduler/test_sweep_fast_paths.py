"""The sweep's bulk paths (PostgreSQL: rows read as plain tuples, organizations read as one JSON document,
the count sent in pipeline mode, binary COPY, a prebuilt JSON encoder) give exactly what the plain ones
give: the same items, recipients and keys, and outbox bodies byte for byte as the envelope encodes them."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from services.scheduler import events
from services.scheduler import sweep as sweep_module
from services.scheduler.models import KnownOrganization, NoticeKey, OutboxMessage
from services.scheduler.policy import load_policy
from services.scheduler.sweep import run_sweep
from shared.messaging.envelope import encode, make_event

from . import payloads

AS_OF = dt.date(2026, 3, 2)
NEVER = dt.date(1, 1, 1)


def day(offset: int) -> dt.date:
    return AS_OF + dt.timedelta(days=offset)


def organization(deliver, name: str, contacts: list) -> str:
    data = payloads.organization(name=name, contacts=contacts)
    deliver("organization.registered", data)
    return data["id"]


def instrument(deliver, organization_id: str, due_on: dt.date, name: str, **fields) -> dict:
    data = payloads.instrument(organization_id=organization_id, due_on=due_on, name=name, **fields)
    deliver("instrument.registered", data)
    return data


def standard(deliver, certificate_expires_on: dt.date, custodian_email: str,
             equipment: list[tuple[str, dt.date | None]]) -> None:
    parts = [{"id": str(uuid.uuid4()), "name": name, "version": 1, "serial_number": f"SN-{n}",
              "due_on": due_on.isoformat() if due_on else None} for n, (name, due_on) in enumerate(equipment)]
    deliver("standard.registered", payloads.standard(certificate_expires_on=certificate_expires_on,
                                                     custodian_email=custodian_email, equipment=parts))


def a_bit_of_everything(deliver) -> list[str]:
    """Instruments in every window (two organizations, one unknown to the read model), equipment and a
    certificate of a custodian; values that JSON escapes. Returns the organization ids."""
    known = organization(deliver, '淄博 "示例" 企业\\有限公司', [
        {"name": "王工", "email": "wang@example.com", "locale": "zh-CN", "phone": "0533-1234567", "x": 1},
        {"name": "Li", "email": "li@example.com"}])
    plain = organization(deliver, "示例膜科技（淄博）有限公司", [])
    unknown = str(uuid.uuid4())
    for offset in (0, 3, 7, 20, 30, -1, -9, -20, -28, 31, 400):
        instrument(deliver, known, day(offset), f"压力表 {offset}\t(tab)")
    instrument(deliver, plain, day(5), "plain")
    instrument(deliver, unknown, day(-2), "orphan")
    standard(deliver, day(-3), " Li@Example.com ", [("never", None), ("soon", day(6)), ("late", day(-8))])
    return [known, plain, unknown]


def test_outbox_bodies_are_exactly_what_the_envelope_encodes(scheduler_db, deliver):
    a_bit_of_everything(deliver)

    with scheduler_db.transaction() as session:
        result = run_sweep(session, as_of=AS_OF, policy=load_policy(session))
    with scheduler_db.Session() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.seq)).all()

    # One event per organization (3), the custodian's equipment, the custodian's certificate.
    assert len(rows) == len(result.notices) == result.notices_emitted == 5
    for row, notice in zip(rows, result.notices, strict=True):
        data = {key: value for key, value in notice.items() if key not in ("type", "subject")}
        event = make_event(notice["type"], events.SOURCE, notice["subject"], data, id=row.event_id,
                           time=row.created_at)
        assert row.body == encode(event).decode()


def test_the_bulk_reads_give_what_the_orm_reads(scheduler_db, deliver):
    organization_ids = a_bit_of_everything(deliver)

    with scheduler_db.transaction() as session:
        policy = load_policy(session)
        items = sweep_module._candidates(session, AS_OF, policy)
        expected_items = [
            dict(row) for kind, window in sweep_module._windows(policy, AS_OF)
            for row in session.execute(sweep_module._candidate_query(kind, window)).mappings()]
        organizations = sweep_module._organizations(session, organization_ids)
        known = session.scalars(select(KnownOrganization)).all()

    assert items == expected_items
    assert [type(item["due_on"]) for item in items if item["due_on"] is not None] == \
           [dt.date] * sum(item["due_on"] is not None for item in items)
    assert organizations == {o.id: {"name": o.name, "name_en": o.name_en, "contacts": o.contacts}
                             for o in known}
    assert set(organizations) == set(organization_ids[:2])


def test_every_key_is_recorded_with_the_event_that_carried_it(scheduler_db, deliver, outbox):
    a_bit_of_everything(deliver)

    with scheduler_db.transaction() as session:
        result = run_sweep(session, as_of=AS_OF, policy=load_policy(session))
    with scheduler_db.Session() as session:
        keys = session.execute(select(NoticeKey.item_kind, NoticeKey.item_id, NoticeKey.due_on,
                                      NoticeKey.lead, NoticeKey.event_id, NoticeKey.sweep_id)).all()

    carried = {(item["item_kind"], item["item_id"],
                dt.date.fromisoformat(item["due_on"]) if item["due_on"] else NEVER, item["lead"], event["id"],
                result.sweep_id)
               for event in outbox() for item in event["data"]["items"]}
    assert len(keys) == len(carried) > 10
    assert set(keys) == carried


def test_a_sweep_with_nothing_due_writes_nothing_and_counts_every_active_item(scheduler_db, deliver, outbox):
    org = organization(deliver, "示例企业", [])
    instrument(deliver, org, day(100), "far")
    removed = instrument(deliver, org, day(3), "removed")
    deliver("instrument.removed", payloads.instrument(organization_id=org, due_on=day(3), id=removed["id"],
                                                      version=2, status="removed"))

    with scheduler_db.transaction() as session:
        result = run_sweep(session, as_of=AS_OF, policy=load_policy(session))

    assert (result.items_scanned, result.notices_emitted, result.notices) == (1, 0, [])
    assert outbox() == []
