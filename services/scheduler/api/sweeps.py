"""Run the due sweep now, or preview what a sweep on some date would send (admin, lab_staff).

A real sweep always runs as of today (institute time): sweeping any other date would record notices
as sent that were not due, or send them early, and corrupt the history of notices. Another date is
accepted only with ``dry_run=true``, which writes nothing.
"""

from __future__ import annotations

import datetime as dt

from flask.views import MethodView
from marshmallow import fields, validate

from services.scheduler.policy import load_policy
from services.scheduler.schemas import NoticeSchema, SweepQuerySchema, SweepResultSchema
from services.scheduler.sweep import SweepConflict, preview, run_sweep
from shared.auth import require
from shared.errors import Problem, ProblemSchema, validation_error
from shared.timeutil import today_in
from shared.web import Blueprint, db_session, settings

blp = Blueprint("sweeps", __name__, url_prefix="/api/v1",
                description="The due sweep: notices of what falls due, each (item, due date, lead) once, "
                            "ever.")

RUNNERS = ("admin", "lab_staff")


class SweepArgumentsSchema(SweepQuerySchema):
    as_of = fields.Date(validate=validate.Range(min=dt.date(1900, 1, 1), max=dt.date(2999, 12, 31)),
                        metadata={"description": "Dry run only: the date to sweep as (default: today, "
                                                 "institute time)"})


class PreviewNoticeSchema(NoticeSchema):
    type = fields.String(metadata={"description": "The event type that would be published"})
    subject = fields.String(allow_none=True, metadata={"description": "The event subject (the recipient)"})


class SweepOutcomeSchema(SweepResultSchema):
    notices = fields.List(fields.Nested(PreviewNoticeSchema),
                          metadata={"description": "Dry run only: the events that would go out"})


@blp.route("/sweeps")
class Sweeps(MethodView):
    @require(*RUNNERS)
    @blp.arguments(SweepArgumentsSchema, location="query")
    @blp.response(200, SweepOutcomeSchema)
    @blp.alt_response(409, schema=ProblemSchema, content_type="application/problem+json",
                      description="`code: concurrent_sweep`: another sweep recorded some of the same notices "
                                  "meanwhile; nothing was emitted by this one (run it again).")
    def post(self, args):
        """Run the due sweep now

        Emits one recalibration notice per recipient (organization, or custodian for the institute's
        equipment), listing every item that crossed a lead time: `recalibration.overdue` when any of them
        is overdue, else `recalibration.due_soon`; a custodian's certificates go in a
        `certificate.renewal_due` notice of their own. Each (item, due date, lead) is noticed once, ever,
        so running it again emits nothing new. `items_scanned`: active items
        considered; `notices_emitted`: events written.

        `dry_run=true` writes nothing and answers `notices`, the events a sweep would emit (on `as_of`,
        default today); `notices_emitted` is then 0. `as_of` other than today without `dry_run` is a 422:
        a real sweep only runs as of today.
        """
        today = today_in(settings().institute_tz)
        as_of = args.get("as_of") or today
        if not args["dry_run"] and as_of != today:
            validation_error({"as_of": f"A sweep runs as of today ({today.isoformat()}); "
                                       "another date is allowed only with dry_run=true."})
        session = db_session()
        policy = load_policy(session)
        try:
            result = run_sweep(session, as_of=as_of, policy=policy, dry_run=args["dry_run"], trigger="api")
        except SweepConflict:
            session.rollback()
            raise Problem(409, "Another sweep recorded some of the same notices meanwhile; this one emitted "
                               "nothing. Run it again.", code="concurrent_sweep") from None
        if args["dry_run"]:
            session.rollback()
        else:
            session.commit()
        return preview(result)
