"""Sample bookings (示例数据) for `make run`: made through the same booking functions as the API, once
the read model holds the inventory's sample standards."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.scheduler import bookings
from services.scheduler.models import KnownOrganization, KnownStandard, Reservation

LAB_STAFF = bookings.Caller(client_id="sample-lab-staff", role="lab_staff")


def load_sample_bookings(session: Session, now: dt.datetime, zone: str) -> int | None:
    """Book the usable sample standards; None while the read model has no usable standard yet.

    Does nothing (0) when any reservation exists, so it never mixes with real data.
    """
    if session.scalar(select(func.count()).select_from(Reservation)):
        return 0
    standards = session.scalars(
        select(KnownStandard).where(KnownStandard.usable, KnownStandard.bookable, KnownStandard.public)
        .order_by(KnownStandard.code)).all()
    if not standards:
        return None
    university = session.scalars(
        select(KnownOrganization).where(KnownOrganization.kind == "university").order_by(KnownOrganization.name)
    ).first()
    partner = bookings.Caller(client_id="sample-partner", role="partner",
                              organization_id=university.id if university else None)
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()

    def at(days: int, hour: int) -> dt.datetime:
        return dt.datetime.combine(today + dt.timedelta(days=days), dt.time(hour), tzinfo=tz)

    plans = [
        (0, LAB_STAFF, 1, 9, 3, "企业送检压力表批量检定（示例）"),
        (0, partner, 3, 14, 3, "质子交换膜透气性对比实验（示例）"),
        (1 % len(standards), LAB_STAFF, 2, 9, 4, "燃料电池氢气流量计校准（示例）"),
        (1 % len(standards), partner, 5, 9, 6, "研究生计量实训（示例）"),
    ]
    made = 0
    for index, caller, days, hour, hours, purpose in plans:
        try:
            bookings.create_booking(session, caller, standard_id=standards[index].id, starts_at=at(days, hour),
                                    ends_at=at(days, hour + hours), purpose=purpose, now=now)
            made += 1
        except (bookings.BookingConflict, bookings.StandardUnavailable, bookings.UnknownStandard):
            continue
    last = standards[-1]
    bookings.create_blackout(session, LAB_STAFF, last, starts_at=at(7, 8), ends_at=at(9, 18),
                             reason="送上级计量机构校准（示例）", now=now)
    return made + 1
