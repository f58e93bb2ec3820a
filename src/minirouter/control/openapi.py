"""The OpenAPI 3.1 document of ``/api/v1``, written as data.

It must match the code: `tests/control/test_openapi.py` checks that every Flask rule has its
path and methods here (and the other way round) with the role the view requires
(``x-minirouter-role``), and a schemathesis run checks that every answer's status and content
type is documented and its body fits the schema. Change a view, change this.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from minirouter import __version__
from minirouter.model import BALANCES, KINDS, PATH_TYPES, REDIRECT_CODES

from .accounts import ROLES
from .bodies import MAX_INT_ARG

JSON = "application/json"
YAML = "application/yaml"
ID_PATTERN = "^[a-z0-9][a-z0-9_.-]{0,63}$"
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to a schema in components."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    properties: dict[str, Schema], required: tuple[str, ...] = (), extra: bool = False
) -> Schema:
    """An object schema (no other properties unless `extra`)."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def string_map(values: Schema | None = None) -> Schema:
    return {"type": "object", "additionalProperties": values or {"type": "string"}}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
REV: Schema = {"type": "integer", "minimum": 0, "description": "a config revision"}
POSITIVE: Schema = {"type": "number", "exclusiveMinimum": 0}
ITEM_ID: Schema = {"type": "string", "pattern": ID_PATTERN}

_HEADER_EDITS = obj({"set": string_map(), "add": string_map(), "remove": array(STRING)})

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": {"type": "string", "description": "what went wrong, one line"},
            "fields": {
                **string_map(),
                "description": "each offending field (a path such as targets[0].address) "
                "and what is wrong with it",
            },
        },
        ("error", "fields"),
    ),
    "Target": {
        "oneOf": [
            {"type": "string", "description": "host:port"},
            obj(
                {"address": STRING, "weight": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ("address",),
            ),
        ]
    },
    "Upstream": obj(
        {
            "id": ITEM_ID,
            "targets": {**array(ref("Target")), "minItems": 1},
            "balance": {"type": "string", "enum": list(BALANCES)},
            "hash_on": {"type": "string", "description": 'client_ip or "header:<name>"'},
            "tls": BOOLEAN,
            "sni": {"type": ["string", "null"]},
            "verify": BOOLEAN,
            "ca": {
                "type": ["string", "null"],
                "description": "PEM certificates trusted instead of the system store (tls only)",
            },
            "keepalive": {"type": "integer", "minimum": 0},
            "timeouts": obj({"connect": POSITIVE, "read": POSITIVE, "idle": POSITIVE}),
            "health": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "path": STRING,
                            "interval": POSITIVE,
                            "timeout": POSITIVE,
                            "healthy": {"type": "integer", "minimum": 1},
                            "unhealthy": {"type": "integer", "minimum": 1},
                        }
                    ),
                ]
            },
            "passive": obj(
                {"max_fails": {"type": "integer", "minimum": 0}, "fail_timeout": POSITIVE}
            ),
        },
        ("id", "targets"),
    ),
    "Route": obj(
        {
            "id": ITEM_ID,
            "hosts": array(STRING),
            "path": STRING,
            "path_type": {"type": "string", "enum": list(PATH_TYPES)},
            "methods": array(STRING),
            "headers": string_map(),
            "priority": {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000},
            "upstream": {"type": ["string", "null"], "description": "an upstream id"},
            "redirect": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {"to": STRING, "code": {"type": "integer", "enum": list(REDIRECT_CODES)}},
                        ("to",),
                    ),
                ]
            },
            "strip_prefix": BOOLEAN,
            "rewrite": {"type": ["string", "null"]},
            "request_headers": _HEADER_EDITS,
            "response_headers": _HEADER_EDITS,
            "preserve_host": BOOLEAN,
            "retries": {"type": "integer", "minimum": 0, "maximum": 10},
            "enabled": BOOLEAN,
            "max_body_size": {
                "oneOf": [
                    {"type": "null"},
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": "^\\s*[0-9]+\\s*[kmgKMG]?[bB]?\\s*$"},
                ],
                "description": 'request body limit in bytes, or a size such as "10m"; 0: '
                "unlimited; null: the core's --max-body-size",
            },
            "websocket": {
                **BOOLEAN,
                "description": "false: Upgrade: websocket is answered as a plain request",
            },
        },
        ("id",),
    ),
    "Listener": obj(
        {"id": ITEM_ID, "listen": STRING, "upstream": ITEM_ID, "tls": BOOLEAN},
        ("id", "listen", "upstream"),
    ),
    "Certificate": obj(
        {
            "id": ITEM_ID,
            "names": {**array(STRING), "minItems": 1},
            "cert": {"type": "string", "description": "PEM"},
            "key": {"type": "string", "description": 'PEM; "<redacted>" for viewers'},
            "default": BOOLEAN,
        },
        ("id", "names", "cert", "key"),
    ),
    "CertificateReplace": obj(
        {
            "id": ITEM_ID,
            "names": {**array(STRING), "minItems": 1},
            "cert": {"type": "string", "description": "PEM"},
            "key": {
                "type": "string",
                "description": "PEM; leave it out to keep the stored key of this certificate",
            },
            "default": BOOLEAN,
        },
        ("id", "names", "cert"),
    ),
    "Config": obj(
        {
            "upstreams": array(ref("Upstream")),
            "routes": array(ref("Route")),
            "listeners": array(ref("Listener")),
            "certificates": array(ref("Certificate")),
        }
    ),
    "DiffEntry": obj(
        {
            "kind": {"type": "string", "enum": list(KINDS)},
            "id": STRING,
            "op": {"type": "string", "enum": ["create", "update", "delete"]},
            "before": {"type": ["object", "null"]},
            "after": {"type": ["object", "null"]},
        },
        ("kind", "id", "op", "before", "after"),
    ),
    "ApplyResult": obj(
        {"rev": REV, "dry_run": BOOLEAN, "diff": array(ref("DiffEntry"))},
        ("rev", "dry_run", "diff"),
    ),
    "Change": obj(
        {
            "seq": {"type": "integer", "minimum": 1},
            "kind": STRING,
            "id": STRING,
            "op": {"type": "string", "enum": ["put", "delete"]},
            "before": {"type": ["object", "null"]},
            "after": {"type": ["object", "null"]},
        },
        ("seq", "kind", "id", "op", "before", "after"),
    ),
    "History": obj(
        {
            "rev": REV,
            "revisions": array(
                obj(
                    {"rev": REV, "actor": STRING, "at": NUMBER, "changes": array(ref("Change"))},
                    ("rev", "actor", "at", "changes"),
                )
            ),
            "next_before": {
                "type": ["integer", "null"],
                "description": "?before= of the next page",
            },
        },
        ("rev", "revisions", "next_before"),
    ),
    "Rollback": obj({"rev": REV}, ("rev",)),
    "RollbackResult": obj({"rev": REV, "rolled_back_to": REV}, ("rev", "rolled_back_to")),
    "MatchRequest": obj(
        {
            "host": {"type": "string", "description": "the Host header (port and case ignored)"},
            "path": {"type": "string", "pattern": "^/", "description": "a query string is ignored"},
            "method": {"type": "string", "default": "GET"},
            "headers": string_map(),
        },
        ("host", "path"),
    ),
    "MatchResult": obj(
        {
            "rev": REV,
            "route": {"type": ["string", "null"], "description": "the winner, null for none (404)"},
            "path": {"type": ["string", "null"], "description": "the path forwarded upstream"},
            "upstream": {"type": ["string", "null"]},
            "redirect": {
                "oneOf": [{"type": "null"}, obj({"to": STRING, "code": INTEGER}, ("to", "code"))]
            },
            "candidates": array(
                obj(
                    {"route": STRING, "matched": BOOLEAN, "reason": STRING},
                    ("route", "matched", "reason"),
                )
            ),
        },
        ("rev", "route", "path", "upstream", "redirect", "candidates"),
    ),
    "Nodes": obj(
        {
            "rev": REV,
            "nodes": array(
                obj(
                    {
                        "node": STRING,
                        "rev": {
                            "type": ["integer", "null"],
                            "description": "the revision it serves",
                        },
                        "current": {
                            "type": "boolean",
                            "description": "rev and epoch are the store's",
                        },
                        "last_seen": {"type": ["number", "null"]},
                        "health": {
                            "type": ["object", "null"],
                            "description": "upstream id -> {host:port: available}, as this"
                            " core sees it; null when it does not report it",
                            "additionalProperties": string_map(BOOLEAN),
                        },
                    },
                    ("node", "rev", "current", "last_seen", "health"),
                    extra=True,
                )
            ),
        },
        ("rev", "nodes"),
    ),
    "TargetHealth": obj(
        {
            "address": STRING,
            "state": {"type": "string", "enum": ["up", "down", "partial", "unknown"]},
            "up": {"type": "integer", "minimum": 0, "description": "cores that see it up"},
            "down": {"type": "integer", "minimum": 0, "description": "cores that see it down"},
            "cores": {"type": "integer", "minimum": 0, "description": "live cores in all"},
            "down_on": array(STRING),
            "text": STRING,
        },
        ("address", "state", "up", "down", "cores", "down_on", "text"),
    ),
    "FleetHealth": obj(
        {
            "rev": REV,
            "cores": {"type": "integer", "minimum": 0},
            "upstreams": string_map(array(ref("TargetHealth"))),
        },
        ("rev", "cores", "upstreams"),
    ),
    "UpstreamHealth": obj(
        {
            "rev": REV,
            "upstream": STRING,
            "cores": {"type": "integer", "minimum": 0},
            "targets": array(ref("TargetHealth")),
        },
        ("rev", "upstream", "cores", "targets"),
    ),
    "Stats": obj(
        {
            "since": INTEGER,
            "now": INTEGER,
            "routes": string_map(array(ref("StatsPoint"))),
            "total": array(ref("StatsPoint")),
        },
        ("since", "now", "routes", "total"),
    ),
    "StatsPoint": {
        "type": "object",
        "properties": {"second": INTEGER},
        "required": ["second"],
        "additionalProperties": NUMBER,
        "description": "counters of one second: requests, 1xx..5xx, bytes, p50, p99",
    },
    "Role": {"type": "string", "enum": list(ROLES)},
    "Account": obj(
        {
            "name": STRING,
            "role": ref("Role"),
            "created": NUMBER,
            "created_by": STRING,
        },
        ("name", "role"),
    ),
    "NewUser": obj(
        {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "role": ref("Role"),
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
        },
        ("name", "role", "password"),
    ),
    "NewToken": obj(
        {"name": {"type": "string", "pattern": NAME_PATTERN}, "role": ref("Role")}, ("name", "role")
    ),
    "CreatedToken": obj(
        {
            "name": STRING,
            "role": ref("Role"),
            "created": NUMBER,
            "created_by": STRING,
            "token": {"type": "string", "description": "shown only here, once"},
        },
        ("name", "role", "token"),
    ),
    "Login": obj({"name": STRING, "password": STRING}, ("name", "password")),
    "Whoami": obj(
        {
            "name": STRING,
            "role": ref("Role"),
            "kind": {"type": "string", "enum": ["token", "user"]},
            "csrf_token": {"type": "string", "description": "send it as X-CSRF-Token"},
        },
        ("name", "role", "kind"),
    ),
}

ERRORS = {
    "400": "malformed body, query parameter or If-Match",
    "401": "no token, a bad or revoked token, or no login session",
    "403": "the role may not do this, or a cookie-authenticated write lacks X-CSRF-Token",
    "404": "no such item (or path)",
    "409": "the id exists (create), is still in use (delete), or the config kept changing",
    "412": "If-Match names a revision that is no longer current; nothing was written",
    "413": "the body is larger than the server's limit",
    "422": "validation failed: `fields` names each offending field",
    "503": "the config store cannot be reached; retry",
}

RESPONSES: dict[str, Any] = {
    code: {"description": text, "content": {JSON: {"schema": ref("Error")}}}
    for code, text in ERRORS.items()
}

PARAMETERS: dict[str, Any] = {
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'the revision the write is based on ("<rev>", as in ETag); * for any',
        "schema": STRING,
    },
}

ETAG_HEADER = {"ETag": {"description": 'the config revision, "<rev>"', "schema": STRING}}


def _json(schema: Schema, description: str, etag: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if etag:
        response["headers"] = ETAG_HEADER
    return response


def _body(schema: Schema, yaml: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": schema}}
    if yaml:
        content[YAML] = {"schema": schema}
    return {"required": True, "content": content}


def _op(
    op_id: str,
    summary: str,
    role: str | None,
    responses: dict[str, Any],
    errors: tuple[str, ...] = (),
    *,
    tags: tuple[str, ...],
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    """One operation; `errors` are the statuses of RESPONSES it can answer besides the auth ones."""
    codes = set(errors)
    if not public:
        codes |= {"401", "403", "503"}
    if body is not None:
        codes |= {"400", "413", "422"}
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": list(tags),
        "responses": {
            **responses,
            **{code: {"$ref": f"#/components/responses/{code}"} for code in sorted(codes)},
        },
    }
    if role is not None:
        operation["x-minirouter-role"] = role
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


IF_MATCH = {"$ref": "#/components/parameters/IfMatch"}
WRITES = ("400", "409", "412")


def _kind_paths(kind: str) -> dict[str, Any]:
    schema = ref(
        {"routes": "Route", "upstreams": "Upstream", "listeners": "Listener"}.get(
            kind, "Certificate"
        )
    )
    one = kind.rstrip("s")
    tags = (kind,)
    listing = obj(
        {"rev": REV, "items": array(schema), "invalid": string_map()}, ("rev", "items", "invalid")
    )
    item_id = _path("id", ITEM_ID)
    return {
        f"/{kind}": {
            "get": _op(
                f"list_{kind}",
                f"List {kind} (?q= keeps those with a text value containing it)",
                "viewer",
                {
                    "200": _json(
                        listing, f"the {kind}; invalid: stored but invalid ones and why", etag=True
                    )
                },
                tags=tags,
                parameters=[_query("q", STRING, "a case-insensitive filter")],
            ),
            "post": _op(
                f"create_{one}",
                f"Create a {one}",
                "editor",
                {"201": _json(schema, "created", etag=True)},
                WRITES,
                tags=tags,
                parameters=[IF_MATCH],
                body=_body(schema),
            ),
        },
        f"/{kind}/{{id}}": {
            "get": _op(
                f"get_{one}",
                f"One {one}",
                "viewer",
                {"200": _json(schema, f"the {one}", etag=True)},
                ("404",),
                tags=tags,
                parameters=[item_id],
            ),
            "put": _op(
                f"put_{one}",
                f"Create or replace a {one}",
                "editor",
                {
                    "200": _json(schema, "replaced", etag=True),
                    "201": _json(schema, "created", etag=True),
                },
                (*WRITES, "404"),
                tags=tags,
                parameters=[item_id, IF_MATCH],
                body=_body(ref("CertificateReplace") if kind == "certificates" else schema),
            ),
            "delete": _op(
                f"delete_{one}",
                f"Delete a {one}",
                "editor",
                {"204": {"description": "deleted", "headers": ETAG_HEADER}},
                (*WRITES, "404"),
                tags=tags,
                parameters=[item_id, IF_MATCH],
            ),
        },
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in KINDS:
        paths.update(_kind_paths(kind))
    config_tags = ("config",)
    paths["/apply"] = {
        "post": _op(
            "apply",
            "Make the stored config the one given (JSON or YAML), as one revision",
            "editor",
            {
                "200": _json(
                    ref("ApplyResult"), "applied (or, with dry_run, what would change)", etag=True
                )
            },
            WRITES,
            tags=config_tags,
            parameters=[
                _query("dry_run", BOOLEAN, "only compute the diff"),
                _query("prune", BOOLEAN, "also delete what the body does not name"),
                IF_MATCH,
            ],
            body=_body(ref("Config"), yaml=True),
        )
    }
    paths["/export"] = {
        "get": _op(
            "export",
            "The whole config; YAML with Accept: application/yaml. apply takes it back unchanged",
            "viewer",
            {
                "200": {
                    "description": "the config",
                    "headers": ETAG_HEADER,
                    "content": {JSON: {"schema": ref("Config")}, YAML: {"schema": STRING}},
                }
            },
            tags=config_tags,
        )
    }
    paths["/history"] = {
        "get": _op(
            "history",
            "Changes, newest revision first, with before/after and who made them",
            "viewer",
            {"200": _json(ref("History"), "one page")},
            ("400",),
            tags=config_tags,
            parameters=[
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    "changes per page (whole revisions)",
                ),
                _query(
                    "before",
                    {"type": "integer", "minimum": 1, "maximum": MAX_INT_ARG},
                    "only revisions below this one",
                ),
            ],
        )
    }
    paths["/rollback"] = {
        "post": _op(
            "rollback",
            "Make the config what it was at a revision, as one new revision",
            "editor",
            {"200": _json(ref("RollbackResult"), "rolled back", etag=True)},
            WRITES,
            tags=config_tags,
            parameters=[IF_MATCH],
            body=_body(ref("Rollback")),
        )
    }
    fleet = ("fleet",)
    paths["/match"] = {
        "post": _op(
            "match",
            "Which route a request would hit, and why the others did not",
            "viewer",
            {"200": _json(ref("MatchResult"), "the winner and every candidate")},
            tags=fleet,
            body=_body(ref("MatchRequest")),
        )
    }
    paths["/nodes"] = {
        "get": _op(
            "nodes",
            "Every core, its revision, whether current",
            "viewer",
            {"200": _json(ref("Nodes"), "the fleet")},
            tags=fleet,
        )
    }
    paths["/health"] = {
        "get": _op(
            "health",
            "Every upstream's targets with their health over the live cores",
            "viewer",
            {"200": _json(ref("FleetHealth"), "per upstream, each target")},
            tags=fleet,
        )
    }
    paths["/upstreams/{id}/health"] = {
        "get": _op(
            "upstream_health",
            "One upstream's targets with their health over the live cores",
            "viewer",
            {"200": _json(ref("UpstreamHealth"), "each target")},
            ("404",),
            tags=fleet,
            parameters=[_path("id", ITEM_ID)],
        )
    }
    paths["/stats"] = {
        "get": _op(
            "stats",
            "Per-second counters per route and in total",
            "viewer",
            {"200": _json(ref("Stats"), "the series")},
            ("400",),
            tags=fleet,
            parameters=[
                _query(
                    "since",
                    {"type": "integer", "minimum": 0, "maximum": MAX_INT_ARG},
                    "Unix second to start at (default: a minute ago)",
                )
            ],
        )
    }
    accounts = ("accounts",)
    for what, new, created in (
        ("users", "NewUser", ref("Account")),
        ("tokens", "NewToken", ref("CreatedToken")),
    ):
        one = what.rstrip("s")
        paths[f"/{what}"] = {
            "get": _op(
                f"list_{what}",
                f"List {what}",
                "admin",
                {"200": _json(obj({what: array(ref("Account"))}, (what,)), what)},
                tags=accounts,
            ),
            "post": _op(
                f"create_{one}",
                f"Create a {one}"
                + (" (the answer holds the token, shown only once)" if what == "tokens" else ""),
                "admin",
                {"201": _json(created, "created")},
                ("409",),
                tags=accounts,
                body=_body(ref(new)),
            ),
        }
        paths[f"/{what}/{{name}}"] = {
            "delete": _op(
                f"delete_{one}",
                f"Delete a {one}" + (" (revoke it)" if what == "tokens" else ""),
                "admin",
                {"204": {"description": "deleted"}},
                ("404",),
                tags=accounts,
                parameters=[_path("name", STRING)],
            )
        }
    session = ("session",)
    paths["/session"] = {
        "post": _op(
            "login",
            "Log in (sets the HttpOnly session cookie; returns the CSRF token)",
            None,
            {
                "200": {
                    **_json(ref("Whoami"), "logged in"),
                    "headers": {
                        "Set-Cookie": {"schema": STRING, "description": "minirouter_session"}
                    },
                }
            },
            ("401", "503"),
            tags=session,
            body=_body(ref("Login")),
            public=True,
        ),
        "get": _op(
            "whoami",
            "Who the caller is",
            "viewer",
            {"200": _json(ref("Whoami"), "the caller")},
            tags=session,
        ),
        "delete": _op(
            "logout",
            "Log out (clears the cookie; needs X-CSRF-Token while the session is live)",
            None,
            {"204": {"description": "logged out"}},
            ("403", "503"),
            tags=session,
            public=True,
        ),
    }
    paths["/openapi.json"] = {
        "get": _op(
            "openapi",
            "This document",
            None,
            {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
            tags=("meta",),
            public=True,
        )
    }
    return paths


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "minirouter control API",
            "version": __version__,
            "description": (
                "Read and change the routers' config. Authenticate with "
                "`Authorization: Bearer <token>` (tokens: POST /tokens, or `minirouter token "
                "create`), or with the session cookie of POST /session plus `X-CSRF-Token` on "
                "writes. Roles: viewer reads, editor also writes the config, admin also manages "
                'users and tokens. Reads carry `ETag: "<rev>"`; writes honour `If-Match`.'
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "minirouter_session",
                    "description": "set by POST /session; writes also need X-CSRF-Token",
                },
            },
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())
