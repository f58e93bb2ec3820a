"""Who is calling, and may they: Bearer tokens, login sessions, roles, CSRF.

- ``Authorization: Bearer <token>`` authenticates an API client. A request that carries the
  header is judged by it alone (a bad token is 401 even with a valid session cookie).
- Otherwise the signed session cookie set by ``POST /api/v1/session`` (the GUI's login)
  authenticates; the user is looked up on every request, so deleting the user or changing
  their password or role takes effect at once. A state-changing request authenticated by
  the cookie must also carry the session's CSRF token in ``X-CSRF-Token``: the cookie is sent
  by the browser on its own, the header only by code that could read the token.
- `require(role)` guards a view: 401 without a valid identity, 403 for a role too low (or a
  missing CSRF token).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request, session

from .accounts import Identity, Role, password_fingerprint
from .app import control_state, load_secret_key
from .bodies import read_object
from .errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")

CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHALLENGE = 'Bearer realm="minirouter"'

bp = Blueprint("session", __name__)


def _unauthorized(message: str, invalid_token: bool = False) -> ApiError:
    challenge = f'{_CHALLENGE}, error="invalid_token"' if invalid_token else _CHALLENGE
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


def _session_identity() -> Identity | None:
    name, fingerprint = session.get("u"), session.get("pv")
    if not isinstance(name, str) or not isinstance(fingerprint, str):
        return None
    return control_state().accounts.session_identity(name, fingerprint)


def identify() -> tuple[Identity, bool]:
    """The caller's identity and whether it came from the session cookie; 401 if none."""
    cached: tuple[Identity, bool] | None = g.get("minirouter_identity")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("expected Authorization: Bearer <token>", invalid_token=True)
        identity = control_state().accounts.token_identity(token.strip())
        if identity is None:
            raise _unauthorized("invalid or revoked token", invalid_token=True)
        result = (identity, False)
    else:
        cookie = request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])
        if cookie is not None and not current_app.secret_key:
            # The store was down when the cookie was to be read: 503 while it still is. (If
            # it is back, this one request was read without its cookie and gets 401.)
            load_secret_key(current_app)
        session_identity = _session_identity()
        if session_identity is None:
            raise _unauthorized("authentication required: a Bearer token or a login session")
        result = (session_identity, True)
    g.minirouter_identity = result
    return result


def check_csrf() -> None:
    """403 unless the request carries the session's CSRF token."""
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER, "")
    # As bytes: compare_digest refuses str with non-ASCII characters, which a header may hold.
    if not isinstance(expected, str) or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    ):
        raise ApiError(403, f"missing or wrong {CSRF_HEADER} header (see POST /api/v1/session)")


def require(role: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a view: the caller must have `role` (or a higher one)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            identity, by_cookie = identify()
            if by_cookie and request.method in _UNSAFE:
                check_csrf()
            if not identity.allows(role):
                raise ApiError(
                    403, f"this needs the {role} role; {identity.actor} is a {identity.role}"
                )
            return view(*args, **kwargs)

        guarded.required_role = role  # type: ignore[attr-defined]  # read by the OpenAPI test
        return guarded

    return decorate


def identity() -> Identity:
    """The identity of a request that passed `require`."""
    return identify()[0]


def _whoami(identity: Identity, by_cookie: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": identity.name, "role": identity.role, "kind": identity.kind}
    if by_cookie:
        body["csrf_token"] = session.get("csrf")
    return body


@bp.post("/session")
def login() -> tuple[Response, int]:
    """Log in with name and password: sets the session cookie, returns the CSRF token."""
    if request.mimetype != "application/json":
        # A cross-site form can post urlencoded or text/plain, never JSON without CORS: a
        # JSON-only login cannot be forged by another site (login CSRF).
        raise ApiError(400, "expected a JSON body (Content-Type: application/json)")
    body = read_object()
    name, password = body.get("name"), body.get("password")
    fields = {k: "expected a string" for k, v in (("name", name), ("password", password))}
    fields = {k: m for k, m in fields.items() if not isinstance(body.get(k), str)}
    if fields:
        raise ApiError(422, "validation failed", fields)
    assert isinstance(name, str) and isinstance(password, str)
    load_secret_key(current_app)  # 503 if the store is down: no cookie can be signed
    found = control_state().accounts.authenticate(name, password)
    if found is None:
        raise _unauthorized("wrong name or password")
    user, record = found
    session.clear()
    session.permanent = True
    session.update(u=user.name, pv=password_fingerprint(record), csrf=secrets.token_urlsafe(32))
    g.minirouter_identity = (user, True)
    return jsonify(_whoami(user, True)), 200


@bp.get("/session")
@require("viewer")
def whoami() -> Response:
    """Who the caller is (a token or the logged-in user); the CSRF token for a session."""
    return jsonify(_whoami(*identify()))


@bp.delete("/session")
def logout() -> tuple[str, int]:
    """Log out: the session cookie is cleared. Needs the CSRF token of a live session."""
    if "Authorization" not in request.headers and _session_identity() is not None:
        check_csrf()
    session.clear()
    return "", 204
