"""The notifier's HTTP service: ``create_app()`` builds it; gunicorn serves ``services.notifier.app:create_app()``."""

from __future__ import annotations

from flask import Flask

from services.notifier import metrics
from services.notifier.api import notifications, preferences, webhooks
from shared.auth import verifier_for
from shared.config import Settings
from shared.db import Database
from shared.messaging.connection import broker_reachable
from shared.web import create_service_app

DESCRIPTION = """Turns events into notices: email to enterprises and lab staff in their language (zh-CN or en),
signed webhooks (Standard Webhooks) to partner systems, and a delivery log of every notification and
attempt.

Tokens are issued by the inventory service (`POST /api/v1/auth/token` there) and verified here with its
public key. Errors are `application/problem+json`."""

BLUEPRINTS = (notifications.blp, webhooks.blp, preferences.blp)


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    settings = settings or Settings("notifier")
    database = database or Database(settings.database_url)
    app, api = create_service_app(
        settings, title="refstd notifier", description=DESCRIPTION, database=database,
        token_verifier=verifier_for(settings),
        readiness_checks=[("broker", lambda: broker_reachable(settings.amqp_url))],
    )
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    metrics.register(database)  # delivery figures, read from the database on scrape
    return app
