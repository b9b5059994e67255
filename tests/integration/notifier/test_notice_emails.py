"""A sweep's notice to an enterprise, from the scheduler's grouping to the email each contact reads: one
email listing every item, its subject and intro naming the overdue and the upcoming apart, each item with
its own state, in zh-CN and in en."""

from __future__ import annotations

import datetime as dt
import email
import json
from email import policy

from sqlalchemy import select

from services.notifier.mail import EmailSender
from services.notifier.models import Notification
from services.scheduler import events as scheduler_events
from services.scheduler.domain import notices as rules
from shared.messaging.envelope import encode, make_event

AS_OF = dt.date(2026, 11, 24)
ENTERPRISE = "3f1c2a9e-8d4b-4e6f-9a1c-5b7d2e4f6a80"
CONTACTS = [{"name": "王工", "email": "wang@hengtai.example", "locale": "zh-CN"},
            {"name": "Anna Keller", "email": "anna@hengtai.example", "locale": "en"}]
MAIL_FROM = "refstd 计量院通知 <noreply@refstd.example>"


def instrument(serial: str, name: str, days_left: int | None, lead: str) -> dict:
    due_on = None if days_left is None else AS_OF + dt.timedelta(days=days_left)
    return {"item_kind": "instrument", "item_id": serial, "name": name, "serial_number": serial,
            "category": None, "regulation": "JJG 52-2013", "mandatory": True, "standard_id": None,
            "organization_id": ENTERPRISE, "custodian_name": None, "custodian_email": None, "due_on": due_on,
            "lead": lead}


#: What the sweep selects for the enterprise on AS_OF, in no particular order.
ITEMS = [
    instrument("YB-2301", "弹簧管式一般压力表", 5, "7"),
    instrument("PT-0099", "工业铂热电阻", -3, "overdue:0"),
    instrument("TP-0457", "电子天平", 10, "30"),
    instrument("LL-7788", "涡街流量计", None, "0"),
    instrument("WD-0012", "数字温度计", -10, "overdue:1"),
]


def sweep_event() -> dict:
    """The one event the sweep writes for the enterprise, as it travels (JSON)."""
    (notice,) = rules.group_notices(ITEMS, as_of=AS_OF, standard_names={}, organizations={
        ENTERPRISE: {"name": "淄博恒泰精密仪器有限公司", "name_en": "Zibo Hengtai Precision Instruments",
                     "contacts": CONTACTS}})
    event = make_event(scheduler_events.PREFIX + notice.type, scheduler_events.SOURCE, notice.subject,
                       notice.data)
    return json.loads(encode(event))


def emails_of(notifier_db, deliver, tmp_path) -> dict[str, email.message.EmailMessage]:
    """Deliver the sweep's event to the notifier and send what it plans through the file transport."""
    event = sweep_event()
    deliver(event=event)
    with notifier_db.Session() as session:
        planned = session.scalars(select(Notification).where(Notification.event_id == event["id"])).all()
    assert [(n.channel, n.recipient, n.locale) for n in sorted(planned, key=lambda n: n.recipient)] == [
        ("email", "anna@hengtai.example", "en"), ("email", "wang@hengtai.example", "zh-CN")]
    directory = tmp_path / "mail"
    with EmailSender(directory.as_uri(), MAIL_FROM) as sender:
        assert all(outcome.ok for outcome in sender.send(planned))
    return {n.locale: email.message_from_bytes((directory / f"{n.id}.eml").read_bytes(), policy=policy.default)
            for n in planned}


def text_and_html(message) -> tuple[str, str]:
    return (message.get_body(preferencelist=("plain",)).get_content(),
            message.get_body(preferencelist=("html",)).get_content())


def test_the_sweep_makes_one_overdue_notice_listing_every_item_most_urgent_first():
    event = sweep_event()
    assert event["type"] == "refstd.scheduler.recalibration.overdue"
    assert [(i["serial_number"], i["days_left"], i["lead"]) for i in event["data"]["items"]] == [
        ("WD-0012", -10, "overdue:1"), ("PT-0099", -3, "overdue:0"), ("LL-7788", 0, "0"), ("YB-2301", 5, "7"),
        ("TP-0457", 10, "30")]


def test_the_chinese_email_names_the_overdue_and_the_upcoming_apart(notifier_db, deliver, tmp_path):
    message = emails_of(notifier_db, deliver, tmp_path)["zh-CN"]
    text, html = text_and_html(message)

    assert message["Subject"] == "5 台计量器具需检定：2 台已超期（最早 2026-11-14 到期），3 台将于 2026-12-04 前到期"
    intro = ("淄博恒泰精密仪器有限公司的以下 5 台计量器具需安排检定：其中 2 台已超期，请尽快安排检定，"
             "强制检定的计量器具逾期不得使用；另有 3 台将于 2026-12-04 前到期，请在各自到期日前安排检定。"
             "各台的到期情况如下：")
    assert intro in text and intro in html
    assert "以下 5 台计量器具已超过到期日" not in text
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("到期日：")] == [
        "到期日：2026-11-14（已超期 10 天）", "到期日：2026-11-21（已超期 3 天）", "到期日：从未检定，现已到期",
        "到期日：2026-11-29（剩余 5 天）", "到期日：2026-12-04（剩余 10 天）"]
    for state in ("已超期 10 天", "已超期 3 天", "从未检定，现已到期", "剩余 5 天", "剩余 10 天"):
        assert state in html


def test_the_english_email_names_the_overdue_and_the_upcoming_apart(notifier_db, deliver, tmp_path):
    message = emails_of(notifier_db, deliver, tmp_path)["en"]
    text, html = text_and_html(message)

    assert message["Subject"] == ("5 instruments due for verification: 2 overdue (the earliest was due "
                                  "2026-11-14), 3 due by 2026-12-04")
    intro = ("For Zibo Hengtai Precision Instruments: 5 instruments are due for verification. 2 are overdue: "
             "please arrange the verification as soon as possible; an instrument under mandatory verification "
             "may not be used while overdue. 3 are due by 2026-12-04: please arrange the verification before "
             "each due date.")
    assert intro in text and intro in html
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("Due:")] == [
        "Due: 2026-11-14 (10 days overdue)", "Due: 2026-11-21 (3 days overdue)", "Due: never verified: due now",
        "Due: 2026-11-29 (5 days left)", "Due: 2026-12-04 (10 days left)"]
    for state in ("10 days overdue", "3 days overdue", "never verified: due now", "5 days left", "10 days left"):
        assert state in html
