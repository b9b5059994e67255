"""The HTTP scaffolding every service shares: app factory base, per-request DB session, request ids,
problem+json errors, health, readiness and metrics endpoints, paging defaults and ETags."""

from __future__ import annotations

import re
import time
import uuid

import flask_smorest
from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.auth import TokenVerifier
from shared.config import Settings
from shared.context import correlation_id
from shared.db import Database
from shared.errors import Problem, ProblemSchema, register_error_handlers
from shared.logs import configure_logging

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

HTTP_REQUESTS = Counter("refstd_http_requests_total", "HTTP requests served",
                        ["service", "method", "endpoint", "status"])
HTTP_LATENCY = Histogram("refstd_http_request_duration_seconds", "HTTP request latency",
                         ["service", "method", "endpoint"])


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        register_error_handlers(self._app)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest blueprint with the contract's paging: page_size 50 by default, 500 at most."""

    DEFAULT_PAGINATION_PARAMETERS = {"page": 1, "page_size": 50, "max_page_size": 500}


def create_service_app(settings: Settings, *, title: str, description: str, database: Database,
                       token_verifier: TokenVerifier | None, readiness_checks=()) -> tuple[Flask, Api]:
    """A Flask app with everything but the service's own blueprints."""
    configure_logging(settings.service, settings.log_level, settings.log_json)
    app = Flask(settings.service)
    app.config.update(
        API_TITLE=title,
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}}},
        },
        REFSTD_SETTINGS=settings,
    )
    app.json.ensure_ascii = False  # Chinese text goes out as written
    app.json.sort_keys = False
    app.extensions["refstd.db"] = database
    app.extensions["refstd.token_verifier"] = token_verifier
    api = Api(app)
    _install_request_context(app, settings.service)
    _install_health(app, database, list(readiness_checks))

    @app.teardown_appcontext
    def _close_session(_exc):
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    return app, api


def db_session() -> Session:
    """The session of the current request (closed when the request ends)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["refstd.db"].Session()
    return g.db_session


def settings() -> Settings:
    return current_app.config["REFSTD_SETTINGS"]


def _install_request_context(app: Flask, service: str) -> None:
    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else str(uuid.uuid4())
        g.request_token = correlation_id.set(g.request_id)
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(service, request.method, endpoint, response.status_code).inc()
        if "request_started" in g:
            HTTP_LATENCY.labels(service, request.method, endpoint).observe(
                time.perf_counter() - g.request_started)
        return response

    @app.teardown_request
    def _reset(_exc):
        token = g.pop("request_token", None)
        if token is not None:
            correlation_id.reset(token)


def _install_health(app: Flask, database: Database, checks: list) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        results = {}
        try:
            with database.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            results["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            results["database"] = f"unavailable: {type(exc).__name__}"
        for name, check in checks:
            results[name] = "ok" if check() else "unavailable"
        ready = all(v == "ok" for v in results.values())
        response = jsonify(status="ready" if ready else "not_ready", checks=results)
        response.status_code = 200 if ready else 503
        return response

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def etag_of(version: int | str) -> str:
    return f'"{version}"'


def check_if_match(current_version: int | str) -> None:
    """412 when the client sent If-Match and it names another version than the current one."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    wanted = {tag.strip() for tag in header.split(",")}
    if "*" not in wanted and etag_of(current_version) not in wanted and \
            f"W/{etag_of(current_version)}" not in wanted:
        raise Problem(412, "The resource has changed since you read it (If-Match does not match its ETag).")
