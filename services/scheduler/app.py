"""The scheduler's HTTP service: ``create_app()`` builds it; gunicorn serves ``services.scheduler.app:create_app()``."""

from __future__ import annotations

from flask import Flask

from services.scheduler.api import bookings, calendar, due, policies, sweeps
from shared.auth import verifier_for
from shared.config import Settings
from shared.db import Database
from shared.messaging.connection import broker_reachable
from shared.web import create_service_app

DESCRIPTION = """What falls due and when (equipment recalibrations, assessment-certificate renewals, enterprise
instruments), the sweeps that turn due dates into notices, and the booking calendar of each public
measurement standard (bookings, approvals, blackouts, availability, an iCalendar feed).

Tokens are issued by the inventory service (`POST /api/v1/auth/token` there) and verified here with its
public key. Timestamps must carry an offset. Errors are `application/problem+json`."""

BLUEPRINTS = (due.blp, policies.blp, sweeps.blp, bookings.blp, calendar.blp)


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    settings = settings or Settings("scheduler")
    database = database or Database(settings.database_url)
    app, api = create_service_app(
        settings, title="refstd scheduler", description=DESCRIPTION, database=database,
        token_verifier=verifier_for(settings),
        readiness_checks=[("broker", lambda: broker_reachable(settings.amqp_url))],
    )
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    return app
