"""Errors as application/problem+json (RFC 9457) on every error path.

Validation errors name every bad field by its own (dotted) name: webargs' location level
(``{"json": {...}}``) is flattened away, as contract.md requires.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import marshmallow as ma
from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
_LOCATIONS = {"json", "query", "querystring", "form", "files", "headers", "view_args", "path", "json_or_form"}


class ProblemSchema(ma.Schema):
    """The error body of every 4xx/5xx answer. It may carry further members (RFC 9457 extension members,
    e.g. ``conflicts`` of a 409 or OAuth2's ``error``), so the spec allows them."""

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(metadata={"description": "URI of the problem type (about:blank when generic)"})
    title = ma.fields.String(metadata={"description": "Short summary of the problem type"})
    status = ma.fields.Integer(metadata={"description": "HTTP status code"})
    detail = ma.fields.String(metadata={"description": "Explanation of this occurrence"})
    code = ma.fields.String(metadata={"description": "Machine-readable code (409 and some 422)"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.Raw()),
        metadata={"description": "Validation messages keyed by field name (dotted for nested fields)"},
    )
    request_id = ma.fields.String()


class Problem(Exception):
    """An error answered as problem+json. Extra keyword arguments become members of the body."""

    def __init__(self, status: int, detail: str, *, code: str | None = None,
                 errors: dict | None = None, title: str | None = None, headers: dict | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.headers = headers
        self.status = status
        self.detail = detail
        self.code = code
        self.errors = errors
        self.title = title
        self.extra = extra


def problem(status: int, detail: str, **kwargs: Any) -> NoReturn:
    raise Problem(status, detail, **kwargs)


def not_found(what: str = "resource") -> NoReturn:
    raise Problem(404, f"No such {what}.")


def validation_error(errors: dict[str, list[str] | str], detail: str = "The request has invalid fields.") -> NoReturn:
    raise Problem(422, detail, errors={k: v if isinstance(v, list) else [v] for k, v in errors.items()})


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list]:
    """``{"json": {"range": {"unit": ["bad"]}}}`` -> ``{"range.unit": ["bad"]}``."""
    flat: dict[str, list] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            key = str(key)
            if not prefix and key in _LOCATIONS:
                flat.update(flatten_errors(value, prefix))
                continue
            flat.update(flatten_errors(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat.setdefault(prefix or "_schema", []).extend(messages)
    elif isinstance(messages, list):
        for item in messages:
            flat.update(flatten_errors(item, prefix))
    else:
        flat.setdefault(prefix or "_schema", []).append(str(messages))
    return flat


def problem_response(status: int, detail: str | None = None, *, title: str | None = None,
                     headers: dict | None = None, **members: Any) -> Response:
    from flask import g  # noqa: PLC0415 - only inside a request

    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _title(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in members.items() if v is not None})
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    # A field name may echo a lone surrogate the client sent (JSON "\ud800" as a key): written back as
    # that same JSON escape instead of failing to encode as UTF-8.
    content = json.dumps(body).encode("utf-8", "backslashreplace")
    response = Response(content, status=status, mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _handle_problem(error: Problem) -> Response:
    return problem_response(error.status, error.detail, title=error.title, code=error.code,
                            errors=error.errors, headers=error.headers, **error.extra)


def _handle_http_exception(error: HTTPException) -> Response:
    data = getattr(error, "data", None) or {}
    status = error.code or 500
    errors = None
    messages = data.get("errors") or data.get("messages")
    if messages:
        errors = flatten_errors(messages)
    detail = data.get("message") or error.description
    if status == 422:
        detail = data.get("message") or "The request has invalid fields."
    if status == 400 and errors:
        # webargs answers 400 for a body that is not JSON: say so in the detail.
        detail = "; ".join(m for msgs in errors.values() for m in msgs)
        errors = None
    headers = dict(data.get("headers") or {})
    if status == 405 and error.get_response().headers.get("Allow"):
        headers["Allow"] = error.get_response().headers["Allow"]
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return problem_response(status, detail, errors=errors, headers=headers)


def _handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(500, "An unexpected error occurred; it has been logged.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Problem, _handle_problem)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
