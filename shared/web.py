"""The HTTP scaffolding every service shares: app factory base, per-request DB session, request ids,
problem+json errors, health, readiness and metrics endpoints, paging, request body parsing, lookups by
id, conflicts as 409 and ETags."""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import flask_smorest
import marshmallow as ma
from flask import Flask, Response, current_app, g, jsonify, request
from flask_smorest.pagination import PaginationMetadataSchema
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import Select, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from webargs.flaskparser import FlaskParser, abort

from shared.auth import TokenVerifier
from shared.config import Settings
from shared.context import correlation_id
from shared.db import Database
from shared.errors import PROBLEM_CONTENT_TYPE, Problem, ProblemSchema, not_found, register_error_handlers
from shared.logs import configure_logging
from shared.schemas import text_problem

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

HTTP_REQUESTS = Counter("refstd_http_requests_total", "HTTP requests served",
                        ["service", "method", "endpoint", "status"])
HTTP_LATENCY = Histogram("refstd_http_request_duration_seconds", "HTTP request latency",
                         ["service", "method", "endpoint"])


class Api(flask_smorest.Api):
    """flask-smorest's Api whose spec says what the service sends: errors as application/problem+json,
    and X-Pagination as the JSON text it is (a header ``schema`` would mean comma-separated values)."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        register_error_handlers(self._app)

    def _register_responses(self):
        # The error responses (DEFAULT_ERROR, UNPROCESSABLE_ENTITY...) are documented in the default
        # content type, which stays application/json for the success responses.
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_CONTENT_TYPE
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE

    def _register_pagination_header(self):
        self.spec.components.header("PAGINATION", {
            "description": "Pagination metadata, as JSON",
            "content": {"application/json": {"schema": PaginationMetadataSchema}},
        }, lazy=True)


BODY_NOT_JSON = "Invalid JSON body."
BODY_REQUIRED = "The request body must be a JSON object (Content-Type: application/json)."
# No table ever holds this many rows; a page starting beyond it is empty whatever the data, and an
# OFFSET this large still fits every database's integer.
MAX_FIRST_ITEM = 2**62


class RequestParser(FlaskParser):
    """webargs' Flask parser, hardened: a JSON body that cannot be decoded for any reason is a 400
    (webargs itself answers 400 only for syntax and UTF-8 errors), and so is a body sent as another
    content type, or none at all where the schema requires a field. A schema whose fields are all
    optional still accepts no body (``{}``)."""

    def load_json(self, req, schema: ma.Schema) -> Any:
        try:
            data = super().load_json(req, schema)
        except RecursionError:
            _bad_body(f"{BODY_NOT_JSON[:-1]}: it is nested too deeply.")
        except ValueError:  # the JSON decoder's other refusals, e.g. an integer of more than 4300 digits
            _bad_body(f"{BODY_NOT_JSON[:-1]}: it holds a number too long to read.")
        if data is ma.missing and (_needs_a_body(schema) or req.get_data(cache=True)):
            _bad_body(BODY_REQUIRED)
        return data


def _bad_body(detail: str) -> NoReturn:
    abort(400, messages={"json": [detail]})


def _needs_a_body(schema: ma.Schema) -> bool:
    """Whether the schema requires a field that its ``partial`` setting does not excuse."""
    if schema.many:
        return True
    if schema.partial is True:
        return False
    excused = set(schema.partial or ())
    return any(field.required and name not in excused for name, field in schema.load_fields.items())


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest blueprint with the contract's paging (page_size 50 by default, 500 at most), the
    hardened body parser, and problems documented as application/problem+json.

    Pages are bounded: a page starting beyond ``MAX_FIRST_ITEM`` is served as the page just past that
    bound, which is as empty as the one asked for (X-Pagination names no page beyond the last one), so
    no list can send the database an OFFSET it cannot represent.
    """

    DEFAULT_PAGINATION_PARAMETERS = {"page": 1, "page_size": 50, "max_page_size": 500}
    ARGUMENTS_PARSER = RequestParser()

    def paginate(self, pager=None, **kwargs):
        paginate = super().paginate(pager, **kwargs)

        def decorator(view):
            @functools.wraps(view)
            def bounded(*args, **view_kwargs):
                parameters = view_kwargs.get("pagination_parameters")
                if parameters is not None:
                    parameters.page = min(parameters.page, MAX_FIRST_ITEM // parameters.page_size + 1)
                return view(*args, **view_kwargs)

            return paginate(bounded)

        return decorator

    def alt_response(self, status_code, response=None, *, schema=None, content_type=None, **kwargs):
        """flask-smorest's ``alt_response``; a problem (a ``ProblemSchema``) is documented as
        application/problem+json, the content type every problem is sent with."""
        problem = isinstance(schema, ProblemSchema) or (isinstance(schema, type) and issubclass(schema, ProblemSchema))
        if content_type is None and problem:
            content_type = PROBLEM_CONTENT_TYPE
        return super().alt_response(status_code, response, schema=schema, content_type=content_type, **kwargs)


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


Model = TypeVar("Model")


def find_by_id(session: Session, model: type[Model], entity_id: Any, *, lock: bool = False) -> Model | None:
    """The entity with this primary key, or None, also for a value that cannot be one (not a string, too
    long for the column, holding NUL...): ids come from paths and bodies, and must never reach the
    database as something it refuses. ``lock`` reads it FOR UPDATE."""
    column = inspect(model).primary_key[0]
    if not isinstance(entity_id, str) or text_problem(entity_id) is not None:
        return None
    length = getattr(column.type, "length", None)
    if length is not None and len(entity_id) > length:
        return None
    key: Any = entity_id
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is not str:
        try:
            key = python_type(entity_id)
        except (TypeError, ValueError, OverflowError):
            return None
    return session.get(model, key, with_for_update=True if lock else None)


def get_or_404(session: Session, model: type[Model], entity_id: Any, what: str, *,
               lock: bool = False) -> Model:
    """``find_by_id`` or 404 "No such <what>."; a malformed id is simply not found."""
    entity = find_by_id(session, model, entity_id, lock=lock)
    if entity is None:
        not_found(what)
    return entity


def paginate_query(session: Session, query: Select, pagination_parameters) -> list:
    """One page of ``query`` (ordered by the caller), setting the item count for the X-Pagination header.

    A page beyond the last is answered without asking the database for it.
    """
    pagination_parameters.item_count = session.scalar(
        select(func.count()).select_from(query.order_by(None).subquery()))
    first = pagination_parameters.first_item
    if first >= pagination_parameters.item_count:
        return []
    return list(session.scalars(query.offset(first).limit(pagination_parameters.page_size)))


def flush_or_409(session: Session, *, what: str = "resource",
                 on_integrity_error: Callable[[], None] | None = None) -> None:
    """``session.flush()`` with conflicts answered as 409.

    A stale version (someone changed the row since it was read) is 409 ``concurrent_update``. A constraint
    violation is rolled back and handed to ``on_integrity_error``, which raises the Problem that explains
    it (e.g. 409 ``duplicate`` naming the conflicting record); without one it propagates.
    """
    try:
        session.flush()
    except StaleDataError as exc:
        session.rollback()
        raise Problem(409, f"The {what} was changed by someone else at the same time; read it again and "
                           "retry.", code="concurrent_update") from exc
    except IntegrityError:
        session.rollback()
        if on_integrity_error is not None:
            on_integrity_error()
        raise


def commit_or_409(session: Session, *, what: str = "resource",
                  on_integrity_error: Callable[[], None] | None = None) -> None:
    """Commit, flushing first through ``flush_or_409``."""
    flush_or_409(session, what=what, on_integrity_error=on_integrity_error)
    session.commit()


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
