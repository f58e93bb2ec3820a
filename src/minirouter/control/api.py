"""The `api` blueprint: every ``/api/v1`` endpoint, assembled from the modules that hold them."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import accounts_api, auth, config_api, fleet_api
from .openapi import document

PREFIX = "/api/v1"

api = Blueprint("api", __name__, url_prefix=PREFIX)
api.register_blueprint(config_api.bp)
api.register_blueprint(fleet_api.bp)
api.register_blueprint(accounts_api.bp)
api.register_blueprint(auth.bp)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API (public: it holds no config and no secrets)."""
    return jsonify(document())


@api.after_request
def no_store(response: Response) -> Response:
    """API answers are live data (and may hold secrets): never cached by the browser."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response
