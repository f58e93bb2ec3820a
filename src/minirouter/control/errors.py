"""Every error of the API as JSON: ``{"error": "...", "fields": {...}}``.

Views raise `ApiError` (or let a store or model error through); the handlers registered by
`register` turn each into its status. Werkzeug's own HTTP errors (404 for an unknown path, 405,
413 for an oversized body) get the same shape.

Outside ``/api/`` (the browser GUI) the same errors are HTML pages instead, made by
`gui.error_page` (a 401 there is a redirect to the login page).
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from minirouter.model import ValidationError
from minirouter.store import ConflictError, NotFoundError, StoreError, StoreUnavailable

from .accounts import AccountError


class ApiError(Exception):
    """An error answer: `status`, a one-line message, and the offending fields if any."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def error_response(
    status: int,
    message: str,
    fields: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error answer: JSON under ``/api/``, the GUI's HTML page elsewhere."""
    if has_request_context() and not _is_api(request.path):
        from .gui import error_page  # imported late: the GUI imports this module

        return error_page(status, message, fields, headers)
    response = jsonify({"error": message, "fields": dict(fields or {})})
    response.status_code = status
    response.headers.update(dict(headers or {}))
    return response


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.fields, exc.headers)


def _validation(exc: ValidationError) -> Response:
    return error_response(422, "validation failed", exc.fields)


def _account(exc: AccountError) -> Response:
    return error_response(422, "validation failed", exc.fields)


def _not_found(exc: NotFoundError) -> Response:
    return error_response(404, str(exc))


def _conflict(exc: ConflictError) -> Response:
    # Only reached when a view gave no If-Match and still lost every retry.
    return error_response(409, f"{exc}; try again")


def _unavailable(exc: StoreUnavailable) -> Response:
    return error_response(503, str(exc), headers={"Retry-After": "1"})


def _store_error(exc: StoreError) -> Response:
    # A corrupt store or a bad server reply: the server's fault, said plainly.
    return error_response(500, str(exc))


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        message = "the request body is too large"
    elif status == 404:
        message = "no such path (or item)"
    elif status == 405:
        message = "method not allowed here; see the Allow header"
    response = error_response(status, message)
    for name, value in exc.get_headers():
        if name.lower() in ("allow", "www-authenticate", "retry-after"):
            response.headers[name] = value
    return response


def register(app: Flask) -> None:
    """Install the JSON error handlers on `app`."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, _validation)
    app.register_error_handler(AccountError, _account)
    app.register_error_handler(NotFoundError, _not_found)
    app.register_error_handler(ConflictError, _conflict)
    app.register_error_handler(StoreUnavailable, _unavailable)
    app.register_error_handler(StoreError, _store_error)
    app.register_error_handler(HTTPException, _http)
