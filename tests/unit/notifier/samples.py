"""One sample event of every type the notifier turns into notices, built with the publishers' own
payload schemas (services/scheduler/events.PAYLOADS) so the samples cannot drift from what is sent."""

from __future__ import annotations

import datetime as dt
import uuid

from services.scheduler import events as scheduler_events
from shared.messaging.envelope import make_event

ENTERPRISE_ID = "0b9d1c4e-2f6a-4c1e-9a57-3f2d8e1b7a10"
UNIVERSITY_ID = "7c3e9a12-5b4d-4f8e-a1c6-9d2e4b6f8a01"
AS_OF = dt.date(2026, 12, 8)

ENTERPRISE = {"kind": "organization", "organization_id": ENTERPRISE_ID, "name": "淄博示例氢能材料有限公司",
              "name_en": "Zibo Sample Hydrogen Materials Co.",
              "contacts": [{"name": "王工", "email": "wang@example.com", "phone": None, "locale": "zh-CN"},
                           {"name": "Anna Keller", "email": "anna@example.com", "phone": None, "locale": "en"}]}
CUSTODIAN = {"kind": "custodian", "organization_id": None, "name": "李工", "name_en": None,
             "contacts": [{"name": "李工", "email": "li.custodian@example.com", "phone": None, "locale": None}]}
UNIVERSITY = {"kind": "organization", "organization_id": UNIVERSITY_ID, "name": "示例大学",
              "name_en": "Sample University",
              "contacts": [{"name": "Prof. Zhang", "email": "zhang@example.edu", "phone": None, "locale": "en"}]}


def _item(kind: str, name: str, days_left: int, lead: str, **extra) -> dict:
    return {"item_kind": kind, "item_id": str(uuid.uuid4()), "name": name, "serial_number": extra.get("serial"),
            "category": extra.get("category"), "regulation": extra.get("regulation"), "mandatory": True,
            "standard_id": extra.get("standard_id"), "standard_name": extra.get("standard_name"),
            "due_on": AS_OF + dt.timedelta(days=days_left), "days_left": days_left, "lead": lead}


def notice(name: str, recipient: dict, items: list[dict], notice_kind: str) -> dict:
    data = {"notice": notice_kind, "as_of": AS_OF, "recipient": recipient,
            "organization_id": recipient.get("organization_id"), "items": items,
            "earliest_due_on": min(i["due_on"] for i in items),
            "next_steps": "请联系淄博市检验检测计量研究总院计量院预约检定：0533-0000000（示例）"}
    payload = scheduler_events.PAYLOADS[name]().dump(data)
    return make_event(scheduler_events.PREFIX + name, scheduler_events.SOURCE, recipient.get("organization_id"),
                      payload)


def booking(name: str, status: str, **changes) -> dict:
    starts = dt.datetime(2026, 12, 15, 1, 0, tzinfo=dt.UTC)
    data = {"id": str(uuid.uuid4()), "standard_id": str(uuid.uuid4()),
            "requested_by": {"client_id": "cl_partner", "organization_id": UNIVERSITY_ID},
            "starts_at": starts, "ends_at": starts + dt.timedelta(hours=4), "purpose": "PEM 透气性对比实验",
            "status": status, "decided_by": "cl_lab" if status != "pending" else None,
            "reason": changes.pop("reason", None), "sequence": changes.pop("sequence", 0),
            "created_at": starts - dt.timedelta(days=3), "updated_at": starts - dt.timedelta(days=2),
            "standard_name": "质子交换膜气体透过率标准装置（示例）", "standard_code": "H2-PEM-0006",
            "lab": "山东省氢能新材料产业计量测试中心", "custodian_email": "li.custodian@example.com",
            "requester": UNIVERSITY, **changes}
    payload = scheduler_events.PAYLOADS[name]().dump(data)
    return make_event(scheduler_events.PREFIX + name, scheduler_events.SOURCE, data["id"], payload)


def all_events() -> dict[str, dict]:
    """event type -> one sample event."""
    instruments = [
        _item("instrument", "一般压力表（示例）", 7, "7", serial="P-1001", category="pressure gauge",
              regulation="JJG 52-2013"),
        _item("instrument", "数字指示秤（示例）", 5, "7", serial="S-2002", category="scale", regulation="JJG 539-2016"),
        _item("instrument", "可燃气体检测报警器（示例）", 0, "0", serial="G-3003", category="gas detector",
              regulation="JJG 693-2011"),
    ]
    overdue = [_item("instrument", "一般压力表（示例）", -3, "overdue:0", serial="P-1009", regulation="JJG 52-2013")]
    equipment = [_item("equipment", "活塞式压力计", 30, "30", serial="EQ-77", standard_id=str(uuid.uuid4()),
                       standard_name="0.02级活塞式压力计标准装置（示例）")]
    flow_standard = "音速喷嘴法气体流量标准装置（示例）"
    certificate = [_item("assessment_certificate", flow_standard, 210, "210",
                         serial="[2022]鲁量标淄证字第001号（示例）", standard_name=flow_standard)]
    samples = [
        notice("recalibration.due_soon", ENTERPRISE, instruments, "due_soon"),
        notice("recalibration.overdue", ENTERPRISE, overdue, "overdue"),
        notice("certificate.renewal_due", CUSTODIAN, certificate, "renewal_due"),
        booking("booking.requested", "pending"),
        booking("booking.confirmed", "confirmed", sequence=1),
        booking("booking.rejected", "rejected", reason="该时段设备维护", sequence=1),
        booking("booking.cancelled", "cancelled", reason="standard_unavailable", sequence=2),
        booking("booking.reminder", "confirmed", sequence=1),
    ]
    result = {event["type"]: event for event in samples}
    result[scheduler_events.PREFIX + "recalibration.due_soon:equipment"] = notice(
        "recalibration.due_soon", CUSTODIAN, equipment, "due_soon")
    # One enterprise's notice of one sweep: 2 overdue (the earliest due 2026-11-24), 1 due today and 2 due
    # by 2026-12-15, most urgent first, as the scheduler lists them.
    mixed = [
        _item("instrument", "工业铂热电阻（示例）", -14, "overdue:1", serial="PT-0099", regulation="JJG 229-2010"),
        _item("instrument", "精密压力表（示例）", -3, "overdue:0", serial="P-1010", regulation="JJG 49-2013"),
        _item("instrument", "涡街流量计（示例）", 0, "0", serial="LL-7788", regulation="JJG 1029-2007"),
        _item("instrument", "电子天平（示例）", 5, "7", serial="TP-0457", regulation="JJG 1036-2022"),
        _item("instrument", "声级计（示例）", 7, "7", serial="SJ-3141", regulation="JJG 188-2017"),
    ]
    result[scheduler_events.PREFIX + "recalibration.overdue:mixed"] = notice(
        "recalibration.overdue", ENTERPRISE, mixed, "overdue")
    # One custodian's certificates of one sweep: one expired on 2026-12-01, one expiring on 2027-07-06 (apply
    # for re-examination by 2027-01-07); the notice is "overdue" because one of them is.
    certificates = [
        _item("assessment_certificate", "0.05级活塞式压力计标准装置（示例）", -7, "overdue:0",
              serial="[2022]鲁量标淄证字第002号（示例）"),
        _item("assessment_certificate", flow_standard, 210, "210", serial="[2022]鲁量标淄证字第001号（示例）",
              standard_name=flow_standard),
    ]
    result[scheduler_events.PREFIX + "certificate.renewal_due:mixed"] = notice(
        "certificate.renewal_due", CUSTODIAN, certificates, "overdue")
    return result
