"""What is due: every active calibratable item with its due date, days left and due state.

Who may see what:
- admin, lab_staff: everything (equipment, assessment certificates, every organization's instruments);
- enterprise: its own organization's instruments only; naming another organization_id (or another kind)
  gives an empty list, as every list does for what a client may not see;
- partner: 403.
"""

from __future__ import annotations

import datetime as dt
import uuid

from flask.views import MethodView
from sqlalchemy import and_, false, func, or_, select, true

from services.scheduler.domain import notices as rules
from services.scheduler.models import TrackedItem
from services.scheduler.policy import load_policy
from services.scheduler.schemas import DueItemSchema, DueQuerySchema
from shared.auth import current_principal, require
from shared.timeutil import today_in
from shared.web import Blueprint, db_session, settings

blp = Blueprint("due", __name__, url_prefix="/api/v1",
                description="What falls due and when: equipment, assessment certificates, enterprise "
                            "instruments.")

READERS = ("admin", "lab_staff", "enterprise")


def _canonical(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _state_condition(state: str, today: dt.date, max_lead: dict[str, int]):
    due_on = TrackedItem.due_on
    if state == "overdue":
        return due_on < today
    if state == "due":
        return or_(due_on == today, due_on.is_(None))
    if state == "due_soon":
        return or_(*(and_(TrackedItem.item_kind == kind, due_on > today,
                          due_on <= today + dt.timedelta(days=lead)) for kind, lead in max_lead.items()))
    return or_(*(and_(TrackedItem.item_kind == kind, due_on > today + dt.timedelta(days=lead))
                 for kind, lead in max_lead.items()))


@blp.route("/due")
class Due(MethodView):
    @require(*READERS)
    @blp.arguments(DueQuerySchema, location="query")
    @blp.response(200, DueItemSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """What is due, most urgent first

        Items due within `within_days` days from today (institute time), overdue and never calibrated
        items always included. `days_left` counts calendar days to `due_on` (negative: overdue). `state`:
        `overdue` (past due_on), `due` (due today, or never calibrated: `due_on` null, due now), `due_soon`
        (within the largest notice lead of the item's kind in the policy, e.g. 30 days for instruments),
        else `ok`. Ordered by due_on (never calibrated first), then item_kind, item_id. An enterprise client
        sees only its own organization's instruments.
        """
        principal = current_principal()
        session = db_session()
        today = today_in(settings().institute_tz)
        policy = load_policy(session)
        max_lead = {kind: max(rules.lead_days(policy, kind)) for kind in rules.ITEM_KINDS}

        conditions = [TrackedItem.active == true(),
                      or_(TrackedItem.due_on.is_(None),
                          TrackedItem.due_on <= today + dt.timedelta(days=args["within_days"]))]
        wanted = _canonical(args["organization_id"]) if args.get("organization_id") is not None else None
        if principal.role == "enterprise":
            own = principal.organization_id
            if own is None or (wanted is not None and wanted != own):
                conditions.append(false())
            conditions += [TrackedItem.item_kind == "instrument", TrackedItem.organization_id == own]
        elif wanted is not None:
            conditions.append(TrackedItem.organization_id == wanted)
        if args.get("kind"):
            conditions.append(TrackedItem.item_kind == args["kind"])
        if args.get("standard_id") is not None:
            conditions.append(TrackedItem.standard_id == _canonical(args["standard_id"]))
        if args.get("state"):
            conditions.append(_state_condition(args["state"], today, max_lead))

        count = session.scalar(select(func.count()).select_from(TrackedItem).where(*conditions))
        pagination_parameters.item_count = count
        if pagination_parameters.first_item >= count:
            return []
        rows = session.scalars(
            select(TrackedItem).where(*conditions)
            .order_by(TrackedItem.due_on.asc().nulls_first(), TrackedItem.item_kind, TrackedItem.item_id)
            .offset(pagination_parameters.first_item).limit(pagination_parameters.page_size)
        ).all()
        items = []
        for item in rows:
            days = rules.days_left(item.due_on, today)
            items.append({
                "item_kind": item.item_kind, "item_id": item.item_id, "name": item.name,
                "serial_number": item.serial_number, "standard_id": item.standard_id,
                "organization_id": item.organization_id, "due_on": item.due_on, "days_left": days,
                "state": rules.due_state(days, rules.lead_days(policy, item.item_kind)),
            })
        return items
