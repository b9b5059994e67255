"""Who may call what: every endpoint of every service, for every kind of caller, as the expected status.

The columns are the callers:

- ``none``: no Authorization header; ``bad``: a well-formed token claiming ``admin`` but signed with a key
  the services do not trust;
- ``admin``, ``lab``: the institute's clients (their tokens carry no organization);
- ``ent``, ``par``: an enterprise and a partner client, ``own`` when the token names the organization that
  owns the resource in the path or the body (organization a), ``other`` when it names another one
  (organization b). The standards, their equipment and records, blackouts and the policy belong to the
  institute: for them own and other only differ where visibility does (public or not).

The policy in one line per endpoint: 401 without a valid token, 403 for a role that may never call it,
404 for what the caller may not see (another organization's resource, a standard that is not public),
answered exactly as an id that names nothing so that ids cannot be probed, and the documented success
status otherwise. A rule given twice carries a
variant in parentheses: the same endpoint called on another resource (``not public``), with another body
(``name``: a field only the institute may change), or as a list filtered to organization a's items
(``organization a``: another organization's client gets an empty list, not a refusal). Lists are also
checked for what they show (calls.py).
"""

from __future__ import annotations

from dataclasses import dataclass

API = "/api/v1"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Caller:
    """One column: a role (None: no token, ``bad``: a token the services do not trust) and, for the
    roles that act for an organization, whether the token names the owner of the resource."""

    column: str
    role: str | None
    side: str | None = None  # "own" | "other" | None (no organization)

    @property
    def label(self) -> str:
        if self.role is None:
            return "anonymous"
        if self.role == "bad":
            return "bad token"
        return f"{self.role} {self.side}" if self.side else self.role

    @property
    def is_staff(self) -> bool:
        return self.role in ("admin", "lab_staff")


CALLERS = (
    Caller("none", None),
    Caller("bad", "bad"),
    Caller("admin", "admin"),
    Caller("lab", "lab_staff"),
    Caller("ent:own", "enterprise", "own"),
    Caller("ent:other", "enterprise", "other"),
    Caller("par:own", "partner", "own"),
    Caller("par:other", "partner", "other"),
)


@dataclass(frozen=True)
class Row:
    service: str
    method: str
    rule: str  # as Flask's url_map spells it
    variant: str | None
    expected: dict[str, int]  # Caller.column -> status

    @property
    def title(self) -> str:
        """``METHOD rule (variant)`` as the table spells it (API rules without the /api/v1 prefix)."""
        rule = self.rule.removeprefix(API)
        return f"{self.method} {rule}" + (f" ({self.variant})" if self.variant else "")


def _parse(service: str, table: str, prefix: str) -> list[Row]:
    """Rows of a table: ``METHOD rule [(variant)] status...``, one status per caller; other lines are
    headings."""
    rows = []
    for line in table.splitlines():
        words = line.split()
        if not words or words[0] not in METHODS:
            continue
        statuses = words[-len(CALLERS):]
        if len(words) < 2 + len(CALLERS) or not all(s.isdigit() for s in statuses):
            raise ValueError(f"{service}: a row needs a method, a rule and {len(CALLERS)} statuses: {line!r}")
        variant = " ".join(words[2:-len(CALLERS)]).strip("()") or None
        rows.append(Row(service, words[0], prefix + words[1], variant,
                        {caller.column: int(status) for caller, status in zip(CALLERS, statuses, strict=True)}))
    return rows


# Served by every service (shared/web.py) for probes and Prometheus: no token needed, none checked.
SERVICE_ROUTES = """
                                                                      token        institute     enterprise  partner
method  rule                                                          none  bad    admin  lab    own  other  own  other
GET     /healthz                                                      200   200    200    200    200  200    200  200
GET     /readyz                                                       200   200    200    200    200  200    200  200
GET     /metrics                                                      200   200    200    200    200  200    200  200
"""

# docs/inventory.md "Roles"; contract.md "Auth". The token endpoint authenticates the client by its
# credentials (form or HTTP Basic): a bearer token there is a wrong client authentication, 401.
INVENTORY = """
                                                                      token        institute     enterprise  partner
method  rule                                                          none  bad    admin  lab    own  other  own  other
POST    /auth/token                                                   200   401    401    401    401  401    401  401
GET     /auth/jwks.json                                               200   200    200    200    200  200    200  200
GET     /catalogue                                                    200   200    200    200    200  200    200  200
GET     /clients                                                      401   401    200    403    403  403    403  403
POST    /clients                                                      401   401    201    403    403  403    403  403
GET     /clients/<client_id>                                          401   401    200    403    403  403    403  403
DELETE  /clients/<client_id>                                          401   401    204    403    403  403    403  403
GET     /organizations                                                401   401    200    200    200  200    200  200
POST    /organizations                                                401   401    201    201    403  403    403  403
GET     /organizations/<organization_id>                              401   401    200    200    200  404    200  404
PATCH   /organizations/<organization_id>                              401   401    200    200    200  404    200  404
PATCH   /organizations/<organization_id> (name)                       401   401    200    200    403  404    403  404
GET     /standards                                                    401   401    200    200    200  200    200  200
POST    /standards                                                    401   401    201    201    403  403    403  403
GET     /standards/<standard_id>                                      401   401    200    200    200  200    200  200
GET     /standards/<standard_id> (not public)                         401   401    200    200    404  404    404  404
PATCH   /standards/<standard_id>                                      401   401    200    200    403  403    403  403
POST    /standards/<standard_id>/status                               401   401    200    200    403  403    403  403
GET     /standards/<standard_id>/history                              401   401    200    200    403  403    403  403
GET     /standards/<standard_id>/checks                               401   401    200    200    403  403    403  403
POST    /standards/<standard_id>/checks                               401   401    201    201    403  403    403  403
GET     /standards/<standard_id>/checks/<check_id>                    401   401    200    200    403  403    403  403
GET     /standards/<standard_id>/equipment                            401   401    200    200    403  403    403  403
POST    /standards/<standard_id>/equipment                            401   401    201    201    403  403    403  403
GET     /equipment/<equipment_id>                                     401   401    200    200    403  403    403  403
PATCH   /equipment/<equipment_id>                                     401   401    200    200    403  403    403  403
GET     /equipment/<equipment_id>/calibrations                        401   401    200    200    403  403    403  403
POST    /equipment/<equipment_id>/calibrations                        401   401    201    201    403  403    403  403
GET     /equipment/<equipment_id>/calibrations/<calibration_id>       401   401    200    200    403  403    403  403
GET     /instruments                                                  401   401    200    200    200  200    403  403
GET     /instruments (organization a)                                 401   401    200    200    200  200    403  403
POST    /instruments                                                  401   401    201    201    201  404    403  403
POST    /instruments/import                                           401   401    200    200    200  404    403  403
GET     /instruments/<instrument_id>                                  401   401    200    200    200  404    403  403
PATCH   /instruments/<instrument_id>                                  401   401    200    200    200  404    403  403
DELETE  /instruments/<instrument_id>                                  401   401    200    200    200  404    403  403
GET     /instruments/<instrument_id>/verifications                    401   401    200    200    200  404    403  403
POST    /instruments/<instrument_id>/verifications                    401   401    201    201    403  403    403  403
GET     /instruments/<instrument_id>/verifications/<verification_id>  401   401    200    200    200  404    403  403
"""

# docs/scheduler.md; contract.md "Scheduler". A partner books any public standard (own and other alike:
# the booking becomes its organization's) and sees only its own organization's bookings; for it a standard
# that is not public does not exist (404 in a path, 422 naming standard_id in a body).
SCHEDULER = """
                                                                      token        institute     enterprise  partner
method  rule                                                          none  bad    admin  lab    own  other  own  other
GET     /due                                                          401   401    200    200    200  200    403  403
GET     /due (organization a)                                         401   401    200    200    200  200    403  403
GET     /policies                                                     401   401    200    200    200  200    200  200
PUT     /policies                                                     401   401    200    403    403  403    403  403
POST    /sweeps                                                       401   401    200    200    403  403    403  403
GET     /bookings                                                     401   401    200    200    403  403    200  200
POST    /bookings                                                     401   401    201    201    403  403    201  201
POST    /bookings (not public)                                        401   401    201    201    403  403    422  422
GET     /bookings/<booking_id>                                        401   401    200    200    403  403    200  404
POST    /bookings/<booking_id>/approve                                401   401    200    200    403  403    403  403
POST    /bookings/<booking_id>/reject                                 401   401    200    200    403  403    403  403
POST    /bookings/<booking_id>/cancel                                 401   401    200    200    403  403    200  404
GET     /standards/<standard_id>/availability                         401   401    200    200    403  403    200  200
GET     /standards/<standard_id>/availability (not public)            401   401    200    200    403  403    404  404
GET     /standards/<standard_id>/blackouts                            401   401    200    200    403  403    200  200
GET     /standards/<standard_id>/blackouts (not public)               401   401    200    200    403  403    404  404
POST    /standards/<standard_id>/blackouts                            401   401    201    201    403  403    403  403
GET     /blackouts/<blackout_id>                                      401   401    200    200    403  403    200  200
GET     /blackouts/<blackout_id> (not public)                         401   401    200    200    403  403    404  404
DELETE  /blackouts/<blackout_id>                                      401   401    204    204    403  403    403  403
GET     /standards/<standard_id>/calendar.ics                         401   401    200    200    403  403    200  200
GET     /standards/<standard_id>/calendar.ics (not public)            401   401    200    200    403  403    404  404
"""

# docs/notifier.md; contract.md "Notifier"; the webhooks blueprint's description (admin and partner only).
NOTIFIER = """
                                                                      token        institute     enterprise  partner
method  rule                                                          none  bad    admin  lab    own  other  own  other
GET     /notifications                                                401   401    200    200    200  200    200  200
GET     /notifications (organization a)                               401   401    200    200    200  200    200  200
GET     /notifications/<notification_id>                              401   401    200    200    200  404    200  404
POST    /notifications/<notification_id>/retry                        401   401    200    200    403  403    403  403
GET     /webhooks                                                     401   401    200    403    403  403    200  200
GET     /webhooks (organization a)                                    401   401    200    403    403  403    200  200
POST    /webhooks                                                     401   401    201    403    403  403    201  404
GET     /webhooks/<webhook_id>                                        401   401    200    403    403  403    200  404
DELETE  /webhooks/<webhook_id>                                        401   401    204    403    403  403    204  404
POST    /webhooks/<webhook_id>/ping                                   401   401    202    403    403  403    202  404
GET     /organizations/<organization_id>/preferences                  401   401    200    200    200  404    200  404
PUT     /organizations/<organization_id>/preferences                  401   401    200    200    200  404    200  404
"""

SERVICES = ("inventory", "scheduler", "notifier")
TABLES = {"inventory": INVENTORY, "scheduler": SCHEDULER, "notifier": NOTIFIER}

ROWS: dict[str, list[Row]] = {
    service: _parse(service, SERVICE_ROUTES, "") + _parse(service, TABLES[service], API) for service in SERVICES
}
