"""Users and API tokens, for admins only."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .accounts import AccountExists
from .app import control_state
from .auth import identity, require
from .bodies import read_object
from .errors import ApiError

bp = Blueprint("accounts", __name__)


@bp.get("/users")
@require("admin")
def users() -> Response:
    """Every user: name, role, created (never a password hash)."""
    return jsonify({"users": control_state().accounts.users()})


@bp.post("/users")
@require("admin")
def add_user() -> tuple[Response, int]:
    """Create a user with a password (hashed with scrypt before it is stored)."""
    body = read_object()
    try:
        user = control_state().accounts.create_user(
            body.get("name"), body.get("role"), body.get("password"), by=identity().actor
        )
    except AccountExists as exc:
        raise ApiError(409, str(exc), {"name": "exists already"}) from None
    return jsonify(user), 201


@bp.delete("/users/<name>")
@require("admin")
def delete_user(name: str) -> tuple[str, int]:
    """Delete a user; their login sessions stop working at once."""
    if not control_state().accounts.delete_user(name):
        raise ApiError(404, f"user {name!r} does not exist")
    return "", 204


@bp.get("/tokens")
@require("admin")
def tokens() -> Response:
    """Every token: name, role, created (never the token or its digest)."""
    return jsonify({"tokens": control_state().accounts.tokens()})


@bp.post("/tokens")
@require("admin")
def add_token() -> tuple[Response, int]:
    """Create a token: the answer holds it, and is the only place it is ever shown."""
    body = read_object()
    try:
        token, record = control_state().accounts.create_token(
            body.get("name"), body.get("role"), by=identity().actor
        )
    except AccountExists as exc:
        raise ApiError(409, str(exc), {"name": "exists already"}) from None
    response = jsonify({**record, "token": token})
    response.headers["Cache-Control"] = "no-store"
    return response, 201


@bp.delete("/tokens/<name>")
@require("admin")
def revoke_token(name: str) -> tuple[str, int]:
    """Revoke a token: requests with it are refused from now on."""
    if not control_state().accounts.revoke_token(name):
        raise ApiError(404, f"token {name!r} does not exist")
    return "", 204
