"""Reading requests: JSON / YAML bodies, query parameters, `If-Match`.

Each reader raises `ApiError` 400 for input it cannot parse; checking what the parsed value
means (422) is the caller's job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from flask import request

from .errors import ApiError

# libyaml's safe loader when PyYAML was built with it (as model.loads_config uses).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(text: bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None


def _yaml(text: bytes) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)  # a safe loader: no Python objects
    except (yaml.YAMLError, RecursionError) as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ApiError(400, f"malformed YAML body{where}: {problem}") from None


def read_body(yaml_allowed: bool = False) -> Any:
    """The request body parsed: JSON; with `yaml_allowed`, YAML too.

    A JSON content type (or none, for JSON-only endpoints) is parsed as strict JSON; with
    `yaml_allowed` any other content type is parsed as YAML, which also reads JSON (so
    ``curl --data-binary @config.yaml`` works whatever type curl sends).
    """
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH, raised by Werkzeug
    if not raw.strip():
        raise ApiError(400, "the request body is empty")
    mimetype = request.mimetype
    if yaml_allowed and not (mimetype == "application/json" or mimetype.endswith("+json")):
        return _yaml(raw)
    return _json(raw)


def read_object(yaml_allowed: bool = False) -> dict[str, Any]:
    """The body, which must be an object (422 naming the root otherwise)."""
    body = read_body(yaml_allowed)
    if not isinstance(body, dict):
        raise ApiError(
            422, "validation failed", {"<root>": f"expected an object, got {type_name(body)}"}
        )
    return body


def type_name(value: Any) -> str:
    """A JSON-ish name for the type of `value`, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "an array" if isinstance(value, list) else type(value).__name__
    )


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def flag(name: str) -> bool:
    """A boolean query parameter (absent: False); 400 for a value that is not one."""
    value = request.args.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ApiError(400, f"bad query parameter {name}", {name: "expected true or false (1 or 0)"})


# The largest integer the stores keep (SQLite's INTEGER is 64-bit): a larger query value would
# fail in the store, so it is refused here as any other bad parameter.
MAX_INT_ARG = 2**63 - 1


def int_arg(name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    """An integer query parameter in [lo, hi] (hi at most MAX_INT_ARG); 400 for anything else."""
    value = request.args.get(name)
    if value is None:
        return default
    hi = MAX_INT_ARG if hi is None else min(hi, MAX_INT_ARG)
    limit = f" and at most {hi}" if hi is not None else ""
    try:
        number = int(value, 10)
    except ValueError:
        number = None
    if number is None or number < lo or (hi is not None and number > hi):
        raise ApiError(
            400, f"bad query parameter {name}", {name: f"expected an integer at least {lo}{limit}"}
        )
    return number


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed `If-Match`: any existing version (``*``) or one of some revisions."""

    any: bool
    revs: frozenset[int]

    def accepts(self, rev: int) -> bool:
        """Whether revision `rev` satisfies the precondition (`*` is checked by the caller)."""
        return self.any or rev in self.revs


_ETAG = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*')


def if_match() -> IfMatch | None:
    """The request's `If-Match` (None without one); 400 for a value that names no revision.

    ETags are ``"<rev>"``; a bare number is accepted too, as is a weak ``W/"<rev>"``.
    """
    header = request.headers.get("If-Match")
    if header is None:
        return None
    if header.strip() == "*":
        return IfMatch(True, frozenset())
    revs: set[int] = set()
    for part in header.split(","):
        found = _ETAG.fullmatch(part)
        if found is None:
            raise ApiError(400, "bad If-Match header", {"If-Match": 'expected "<revision>" or *'})
        revs.add(int(found.group(1)))
    return IfMatch(False, frozenset(revs))


def etag(rev: int) -> str:
    """The ETag of revision `rev`."""
    return f'"{rev}"'


def precondition_failed(current: int) -> ApiError:
    """The 412 answer for a stale `If-Match`."""
    return ApiError(
        412,
        f"the config is at revision {current}, not the one in If-Match; nothing was written",
        headers={"ETag": etag(current)},
    )
