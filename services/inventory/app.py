"""The inventory's HTTP service: ``create_app()`` builds it; gunicorn serves ``services.inventory.app:app``."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.exc import IntegrityError

from services.inventory import clients, domain
from services.inventory.api import auth, catalogue, equipment, instruments, organizations, standards
from shared.auth import TokenSigner, TokenVerifier, load_or_create_private_key, load_public_keys
from shared.config import Settings
from shared.db import Database
from shared.errors import problem_response
from shared.messaging.connection import broker_reachable
from shared.web import create_service_app

DESCRIPTION = """The institute's public measurement standards (社会公用计量标准), their equipment, calibrations,
stability checks and assessment certificates; the enterprises and partner universities; the instruments
enterprises bring for periodic verification. Every change is published as a CloudEvent on RabbitMQ.

Authenticate with OAuth2 client credentials at `POST /api/v1/auth/token`, then send
`Authorization: Bearer <token>`. Errors are `application/problem+json`."""

BLUEPRINTS = (auth.blp, catalogue.blp, organizations.blp, standards.blp, equipment.blp, instruments.blp)


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    settings = settings or Settings("inventory")
    database = database or Database(settings.database_url)
    key = load_or_create_private_key(settings.jwt_private_key, settings.jwt_private_key_file)
    signer = TokenSigner(key, settings.token_ttl_seconds, load_public_keys(settings.jwt_trusted_public_keys))
    app, api = create_service_app(
        settings, title="refstd inventory", description=DESCRIPTION, database=database,
        token_verifier=TokenVerifier(public_keys=signer.public_keys()),
        readiness_checks=[("broker", lambda: broker_reachable(settings.amqp_url))],
    )
    app.extensions["refstd.token_signer"] = signer
    # A rule refusing a value the schemas let through is still the client's error, never a 500.
    app.register_error_handler(domain.DomainError, lambda error: problem_response(422, str(error)))
    domain.unit_problem("m")  # builds the unit registry now rather than during the first request
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    if settings.bootstrap_client_id and settings.bootstrap_client_secret:
        try:
            with database.transaction() as session:
                clients.ensure_bootstrap_admin(session, settings.bootstrap_client_id,
                                               settings.bootstrap_client_secret)
        except IntegrityError:
            pass  # another process (a second gunicorn worker) created it at the same moment
    return app


def __getattr__(name: str):
    # `gunicorn services.inventory.app:app` builds the app on first access, after the fork.
    if name == "app":
        return create_app()
    raise AttributeError(name)
