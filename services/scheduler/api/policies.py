"""The notice policy: lead times before due dates, overdue repeats, booking reminders.

Who may do what:
- every authenticated client reads it (it holds no secret, and it says when an enterprise or partner is
  told about what is due);
- admin replaces it (PUT, full replacement); every other role gets 403.
"""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy.exc import IntegrityError

from services.scheduler.policy import StalePolicy, load_policy, save_policy
from services.scheduler.schemas import PolicySchema
from shared.auth import require
from shared.errors import Problem, ProblemSchema
from shared.web import Blueprint, check_if_match, db_session, etag_of

blp = Blueprint("policies", __name__, url_prefix="/api/v1",
                description="The notice policy: when notices go out before and after due dates.")

_ETAG_HEADER = {"ETag": {"schema": {"type": "string"}}}
_PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}


class PolicyInputSchema(PolicySchema):
    """The full policy; ``version`` may be sent back as read (then it must be current, like If-Match)."""

    version = fields.Integer(strict=True, validate=validate.Range(min=1),
                             metadata={"description": "Optional: the version read; 412 if no longer current"})


def _stale(current_version: int) -> Problem:
    return Problem(412, f"The policy has changed since you read it (it is now version {current_version}).")


@blp.route("/policies")
class Policies(MethodView):
    @require()
    @blp.response(200, PolicySchema, headers=_ETAG_HEADER)
    def get(self):
        """The notice policy in force (the defaults until one is saved)

        Lead days are days before the due date at which a notice goes out (largest first); after the due
        date a reminder goes out every `overdue_repeat_days`, at most `overdue_max_notices` times.
        """
        policy = load_policy(db_session())
        return policy, 200, {"ETag": etag_of(policy["version"])}

    @require("admin")
    @blp.arguments(PolicyInputSchema)
    @blp.response(200, PolicySchema, headers=_ETAG_HEADER)
    @blp.alt_response(412, description="If-Match (or `version` in the body) names another version than the "
                                       "current one.", **_PROBLEM)
    @blp.alt_response(409, description="`code: concurrent_update`: another change was saved meanwhile.",
                      **_PROBLEM)
    def put(self, data):
        """Replace the notice policy (admin)

        Every setting is required. Lead days: distinct integers from 0 to 3660 (order does not matter;
        stored largest first). Takes effect at the next sweep. Honours If-Match; bumps the version.
        """
        session = db_session()
        current = load_policy(session)["version"]
        check_if_match(current)
        expected = data.pop("version", None)
        if expected is not None and expected != current:
            raise _stale(current)
        try:
            policy = save_policy(session, data, expected_version=current)
        except (StalePolicy, IntegrityError):
            session.rollback()
            raise Problem(409, "Another change of the policy was saved meanwhile; read it and try again.",
                          code="concurrent_update") from None
        session.commit()
        return policy, 200, {"ETag": etag_of(policy["version"])}
