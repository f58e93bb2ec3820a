"""The OpenAPI document matches the code: the same paths, methods and roles as the Flask rules,
and a schemathesis run against it finds no server error and no undocumented answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from minirouter.control import ControlSettings, create_app
from minirouter.control.app import ControlState, close_app
from minirouter.control.openapi import document

from .conftest import CERTIFICATE, LISTENER, PREFIX, ROUTE, UPSTREAM

AUTOMATIC = {"HEAD", "OPTIONS"}  # added by Flask to every rule
EXAMPLES = 10  # per operation and mode: the suite stays well under a minute


def flask_operations(app: Flask) -> dict[tuple[str, str], str | None]:
    """(METHOD, OpenAPI path) -> the role the view requires, for every /api/v1 rule."""
    found: dict[tuple[str, str], str | None] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = app.view_functions[rule.endpoint]
        role = getattr(view, "required_role", None)
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule.removeprefix(PREFIX))
        paths = [path]
        if "{kind}" in path:
            paths = [
                path.replace("{kind}", kind)
                for kind in ("routes", "upstreams", "listeners", "certificates")
            ]
        for concrete in paths:
            concrete = concrete.replace("{item_id}", "{id}")
            for method in sorted((rule.methods or set()) - AUTOMATIC):
                found[(method, concrete)] = role
    return found


def test_document_matches_the_flask_rules(app: Flask) -> None:
    doc = document()
    documented = {
        (method.upper(), path): operation.get("x-minirouter-role")
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    }
    assert flask_operations(app) == documented


def test_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert any(code.startswith("2") for code in codes), (method, path)
            if operation.get("security") != []:
                assert {"401", "403", "503"} <= codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= codes, (method, path)
    # Every reference resolves.
    text = repr(doc)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in doc["components"]["schemas"], name
    for name in re.findall(r"#/components/responses/(\w+)", text):
        assert name in doc["components"]["responses"], name


@pytest.fixture
def fuzzed_app(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """An app with some config and an admin token, for schemathesis.

    On the SQLite store only: what is checked here (statuses, content types, bodies against
    the document) is the API's code, the same whatever the backend; both backends keep one
    contract (tests/store) and every endpoint runs on both in the other test files.
    """
    app = create_app(ControlSettings(f"sqlite://{tmp_path / 'store.db'}"))
    try:
        state: ControlState = app.extensions["minirouter"]
        token, _ = state.accounts.create_token("fuzz-admin-token-do-not-revoke", "admin")
        client = app.test_client()
        auth = {"Authorization": f"Bearer {token}"}
        config = {
            "upstreams": [UPSTREAM],
            "routes": [ROUTE],
            "listeners": [LISTENER],
            "certificates": [CERTIFICATE],
        }
        assert client.post(f"{PREFIX}/apply", json=config, headers=auth).status_code == 200
        state.store.heartbeat("core-1", {"rev": 1, "pid": 1}, ttl=60)
        yield app, token
    finally:
        close_app(app)


OPERATIONS = [
    (method.upper(), path)
    for path, operations in document()["paths"].items()
    for method in operations
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _has_input(method: str, path: str) -> bool:
    operation = document()["paths"][path][method.lower()]
    return bool(
        operation.get("parameters")
        or operation.get("requestBody")
        or operation.get("security") != []
    )


# Negative mode needs something to break: an operation without parameters, body or
# credentials has no invalid request (hypothesis would report it unsatisfiable).
CASES = [
    (m, p, mode)
    for m, p in OPERATIONS
    for mode in GenerationMode
    if mode.is_positive or _has_input(m, p)
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES]
)
def test_schemathesis(
    fuzzed_app: tuple[Flask, str], method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests (valid ones, and invalid ones in negative mode) as an admin: no
    5xx, and every status, content type and body is the one documented."""
    app, token = fuzzed_app
    schema = schemathesis.openapi.from_wsgi(f"{PREFIX}/openapi.json", app)
    operation = schema[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    check()
