"""The config data model: Route, Upstream, Target, Listener, Certificate.

One JSON shape everywhere (store values, API bodies, YAML files); see DESIGN.md.
Every object is an immutable dataclass; build them from plain data with
`from_dict` so that validation always runs, and turn them back with `to_dict`.
Validation collects every problem and raises one `ValidationError` whose
`fields` maps a field path (``routes[2].path``) to a message.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Literal, TypeAlias, TypeVar, cast, overload

import yaml

from minirouter.certcheck import check_ca_bundle, check_certificate
from minirouter.config import parse_size

_T = TypeVar("_T")
Balance = Literal["round_robin", "weighted", "least_conn", "hash"]
PathType = Literal["prefix", "exact", "regex"]


@dataclass(frozen=True, slots=True)
class Target:
    address: str  # "host:port"; IPv6 as "[::1]:port"
    weight: int = 1

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 3.0
    read: float = 30.0
    idle: float = 60.0


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 2.0
    healthy: int = 2
    unhealthy: int = 3


@dataclass(frozen=True, slots=True)
class Passive:
    max_fails: int = 3
    fail_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Upstream:
    id: str
    targets: tuple[Target, ...]
    balance: Balance = "round_robin"
    hash_on: str = "client_ip"  # or "header:X-User-Id"
    tls: bool = False
    sni: str | None = None
    verify: bool = True
    # PEM certificates trusted instead of the system store (a private CA, or the upstream's own
    # certificate to pin it); any certificate in it is a trust anchor.
    ca: str | None = None
    keepalive: int = 64
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: HealthCheck | None = None
    passive: Passive = field(default_factory=Passive)

    @classmethod
    def from_dict(cls, data: Any) -> Upstream:
        """Validate plain data (the JSON shape) and build an Upstream."""
        return _build_one(_upstream, data, Upstream)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape, without fields equal to their defaults."""
        return to_dict(self)


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    set: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


NO_EDITS = HeaderEdits()


@dataclass(frozen=True, slots=True)
class Redirect:
    to: str
    code: int = 308


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    hosts: tuple[str, ...] = ()
    path: str = "/"
    path_type: PathType = "prefix"
    methods: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    upstream: str | None = None
    redirect: Redirect | None = None
    strip_prefix: bool = False
    rewrite: str | None = None
    # One shared immutable default: most routes edit nothing, and 100k routes each with two
    # empty HeaderEdits (four dicts) cost tens of MB.
    request_headers: HeaderEdits = NO_EDITS
    response_headers: HeaderEdits = NO_EDITS
    preserve_host: bool = False
    retries: int = 1
    enabled: bool = True
    # Request body limit in bytes (0: unlimited); None: the core's --max-body-size.
    max_body_size: int | None = None
    # False: an "Upgrade: websocket" request is answered as a plain one (Upgrade not passed).
    websocket: bool = True

    @classmethod
    def from_dict(cls, data: Any) -> Route:
        """Validate plain data (the JSON shape) and build a Route."""
        return _build_one(_route, data, Route)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape, without fields equal to their defaults."""
        return to_dict(self)


@dataclass(frozen=True, slots=True)
class Listener:
    id: str
    listen: str
    upstream: str
    tls: bool = False  # terminate TLS with the certificates (chosen by SNI) before piping

    @classmethod
    def from_dict(cls, data: Any) -> Listener:
        """Validate plain data (the JSON shape) and build a Listener."""
        return _build_one(_listener, data, Listener)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape."""
        return to_dict(self)


@dataclass(frozen=True, slots=True)
class Certificate:
    id: str
    names: tuple[str, ...]
    cert: str  # PEM: the leaf first, then its intermediates
    key: str  # PEM, unencrypted
    default: bool = False  # served when no name matches the client's SNI (or it sent none)

    @classmethod
    def from_dict(cls, data: Any) -> Certificate:
        """Validate plain data (the JSON shape) and build a Certificate."""
        return _build_one(_certificate, data, Certificate)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape."""
        return to_dict(self)


@dataclass(frozen=True, slots=True)
class Config:
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()
    listeners: tuple[Listener, ...] = ()
    certificates: tuple[Certificate, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> Config:
        """Validate a whole config mapping; see `config_from_dict`."""
        return config_from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the whole config; see `config_to_dict`."""
        return config_to_dict(self)


Item: TypeAlias = Route | Upstream | Listener | Certificate

KINDS: tuple[str, ...] = ("routes", "upstreams", "listeners", "certificates")
KIND_TYPES: dict[str, type[Item]] = {
    "routes": Route,
    "upstreams": Upstream,
    "listeners": Listener,
    "certificates": Certificate,
}
BALANCES: tuple[str, ...] = ("round_robin", "weighted", "least_conn", "hash")
PATH_TYPES: tuple[str, ...] = ("prefix", "exact", "regex")
REDIRECT_CODES: tuple[int, ...] = (301, 302, 303, 307, 308)

# The router writes these itself (framing is decided by the core, see architecture.md), so a
# route edit of them could produce a request or response with two framings.
# Framing and hop-by-hop headers belong to the router: an edit could otherwise create two
# framings or a second connection semantics (the fast path ignores them too).
REQUEST_HEADERS_NOT_EDITABLE = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)
RESPONSE_HEADERS_NOT_EDITABLE = REQUEST_HEADERS_NOT_EDITABLE | {"host"}

_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
# Underscores are not valid in DNS host names but are common in container/service names.
# ASCII: under IGNORECASE alone, [a-z] also matches the Kelvin sign and the long s.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
# Dot-separated labels in one match: a label cannot hold a dot, so this is each label matched
# alone, without a Python loop over the labels.
_DNS_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE | re.ASCII)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BAD_VALUE_RE = re.compile(r"[\r\n\x00]")
_BAD_PATH_RE = re.compile(r"[\s\x00-\x1f\x7f]")
# Same grammar as the fast path's templates: "$1" is one digit ("$12" is $1 then "2"), "${12}".
_GROUP_REF_RE = re.compile(r"\$(?:([0-9])|\{([0-9]+)\})")


class ValidationError(ValueError):
    """Invalid config data; `fields` maps each offending field path to a message."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields: dict[str, str] = dict(fields)
        super().__init__(self.fields)

    def __str__(self) -> str:
        return "\n".join(f"{path}: {message}" for path, message in self.fields.items())

    def __reduce__(self) -> tuple[type[ValidationError], tuple[dict[str, str]]]:
        # Errors cross process boundaries (workers); keep the fields when pickled.
        return (type(self), (self.fields,))


class _Errors:
    """Collects messages by field path while a whole value is validated."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def add(self, path: str, message: str) -> None:
        path = path or "<root>"
        old = self.fields.get(path)
        self.fields[path] = message if old is None else f"{old}; {message}"

    def raise_if_any(self) -> None:
        if self.fields:
            raise ValidationError(self.fields)


_Parser: TypeAlias = Callable[[Any, str, _Errors], Any]


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


# -- scalar checks: each returns the accepted value, or None after recording an error ------------


def _int(value: Any, path: str, e: _Errors, lo: int, hi: int | None = None) -> int | None:
    # bool is a subclass of int, but `retries: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        e.add(path, f"expected an integer, got {_type_name(value)}")
        return None
    if value < lo or (hi is not None and value > hi):
        e.add(path, f"must be at least {lo}" if hi is None else f"must be between {lo} and {hi}")
        return None
    return value


def _positive(value: Any, path: str, e: _Errors) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        e.add(path, f"expected a number, got {_type_name(value)}")
        return None
    if not math.isfinite(value) or value <= 0:
        e.add(path, "must be a positive number")
        return None
    return float(value)


def _bool(value: Any, path: str, e: _Errors) -> bool | None:
    if not isinstance(value, bool):
        e.add(path, f"expected true or false, got {_type_name(value)}")
        return None
    return value


def _lone_surrogate(text: str) -> int:
    """Where `text` holds a lone surrogate ("\\ud800" in JSON), -1 if nowhere: such a string
    passes JSON, but can be neither written as UTF-8 (YAML, the GUI, the snapshot file) nor sent
    in a request."""
    if text.isascii():
        return -1
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


def _unicode_ok(text: str, path: str, e: _Errors) -> bool:
    at = _lone_surrogate(text)
    if at >= 0:
        e.add(path, f"must be valid Unicode text (a lone surrogate at position {at})")
    return at < 0


def _str(value: Any, path: str, e: _Errors) -> str | None:
    if not isinstance(value, str):
        e.add(path, f"expected a string, got {_type_name(value)}")
        return None
    if not value:
        e.add(path, "must not be empty")
        return None
    return value if _unicode_ok(value, path, e) else None


def _choice(options: tuple[Any, ...]) -> _Parser:
    # Keyed by type too: 301.0 == 301 and True == 1, but neither is a valid code.
    allowed = frozenset((type(o), o) for o in options)

    def parse(value: Any, path: str, e: _Errors) -> Any:
        try:
            ok = (type(value), value) in allowed
        except TypeError:  # unhashable (a list, a mapping): not one of the options
            ok = False
        if not ok:
            shown = _short(value) if isinstance(value, str) else _type_name(value)
            e.add(path, f"must be one of {', '.join(map(str, options))}; got {shown}")
            return None
        return value

    return parse


def _optional(parse: _Parser) -> _Parser:
    def parse_optional(value: Any, path: str, e: _Errors) -> Any:
        return None if value is None else parse(value, path, e)

    return parse_optional


def _ranged(lo: int, hi: int | None = None) -> _Parser:
    return lambda value, path, e: _int(value, path, e, lo, hi)


def _id(value: Any, path: str, e: _Errors) -> str | None:
    if type(value) is str and _ID_RE.fullmatch(value):
        return value  # the common case: no need to tell why it is wrong
    text = _str(value, path, e)
    if text is not None and not _ID_RE.fullmatch(text):
        e.add(path, f"invalid id {_short(text)}: use [a-z0-9][a-z0-9_.-]{{0,63}}")
        return None
    return text


def _is_dns_name(name: str) -> bool:
    # A numeric last label is an IPv4 address (or a typo of one), never a DNS name.
    return (
        0 < len(name) <= 253
        and _DNS_NAME_RE.fullmatch(name) is not None
        and not name.rpartition(".")[2].isdigit()
    )


def _is_ipv4(text: str) -> bool:
    if text.count(".") != 3:
        return False  # what the parser would say too, without raising and catching
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipv6(text: str) -> str | None:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


# Parsing an address is the dearest check, and each is split twice (checked, then compared with
# its siblings); upstreams also share their targets' addresses.
@functools.lru_cache(maxsize=4096)
def _split_address(text: str) -> tuple[str, int] | str:
    """Split "host:port" into (comparable host, port), or return an error message."""
    if text.startswith("["):
        inner, sep, port = text[1:].partition("]:")
        host = _ipv6(inner)
        if not sep or host is None:
            return f'invalid address {_short(text)}: expected "[ipv6]:port"'
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            return f'invalid address {_short(text)}: expected "host:port"'
        if ":" in host:
            return f'invalid address {_short(text)}: IPv6 hosts need brackets, "[::1]:port"'
        if not (_is_dns_name(host) or _is_ipv4(host)):
            return f"invalid host {_short(host)}: expected a DNS name, IPv4 or [IPv6] address"
        host = host.lower()
    if not _PORT_RE.fullmatch(port) or not 1 <= int(port) <= 65535:
        return f"invalid port {_short(port)}: must be 1..65535"
    return host, int(port)


def _address(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is None:
        return None
    problem = _split_address(text)
    if isinstance(problem, str):
        e.add(path, problem)
        return None
    return text


def _host_pattern(value: Any, path: str, e: _Errors) -> str | None:
    """An exact host or a "*.suffix" wildcard, normalised (lower case, no trailing dot)."""
    text = _str(value, path, e)
    if text is None:
        return None
    host = text.lower().removesuffix(".")
    if host.startswith("*."):
        if _is_dns_name(host[2:]):
            return sys.intern(host)  # the same names recur across thousands of routes
        e.add(path, f'invalid wildcard {_short(text)}: expected "*." and a DNS name')
        return None
    if "*" in host:
        e.add(path, f'invalid host {_short(text)}: only a leading "*." wildcard is allowed')
        return None
    if _is_dns_name(host) or _is_ipv4(host):  # the first is cheaper and the more common
        return sys.intern(host)
    ipv6 = _ipv6(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    if ipv6 is not None:
        return ipv6  # bare, as normalize_host() gives it
    e.add(path, f"invalid host {_short(text)}: expected a DNS name, an IP address or *.suffix")
    return None


def _header_name(not_editable: frozenset[str] = frozenset()) -> _Parser:
    def parse(value: Any, path: str, e: _Errors) -> str | None:
        name = _str(value, path, e)
        if name is None:
            return None
        if not _TOKEN_RE.fullmatch(name):
            e.add(path, f"invalid header name {_short(name)}")
            return None
        if name.lower() in not_editable or (not_editable and name.lower().startswith("proxy-")):
            e.add(path, f"{name} is written by the router itself and cannot be edited")
            return None
        return name

    return parse


def _header_value(value: Any, path: str, e: _Errors) -> str | None:
    if not isinstance(value, str):
        e.add(path, f"expected a string, got {_type_name(value)}")
        return None
    if _BAD_VALUE_RE.search(value):
        e.add(path, "header values must not contain CR, LF or NUL")
        return None
    return value if _unicode_ok(value, path, e) else None


def _header_map(not_editable: frozenset[str] = frozenset()) -> _Parser:
    check_name = _header_name(not_editable)

    def parse(value: Any, path: str, e: _Errors) -> dict[str, str] | None:
        if not isinstance(value, Mapping):
            e.add(path, f"expected a mapping of header name to value, got {_type_name(value)}")
            return None
        out: dict[str, str] = {}
        seen: set[str] = set()
        for name, text in value.items():
            where = _at(path, str(name))
            if check_name(name, where, e) is None or _header_value(text, where, e) is None:
                continue
            if name.lower() in seen:  # header names are case-insensitive
                e.add(where, "duplicate header name (names are case-insensitive)")
                continue
            seen.add(name.lower())
            out[name] = text
        return out

    return parse


def _list_of(
    parse: _Parser,
    *,
    key: Callable[[Any], Hashable] | None = None,
    what: str = "value",
    sub: str | None = None,
    non_empty: bool = False,
) -> _Parser:
    """A list parser: converts to a tuple; `key` finds duplicates, reported at `[i].sub`."""

    def parse_list(value: Any, path: str, e: _Errors) -> tuple[Any, ...] | None:
        if not isinstance(value, list | tuple):
            e.add(path, f"expected a list, got {_type_name(value)}")
            return None
        if non_empty and not value:
            e.add(path, f"at least one {what} is required")
        out: list[Any] = []
        seen: dict[Hashable, int] = {}
        for i, raw in enumerate(value):
            item = parse(raw, _at(path, i), e)
            if item is None:
                continue
            if key is not None:
                k = key(item)
                if k in seen:
                    where = _at(_at(path, i), sub) if sub else _at(path, i)
                    e.add(where, f"duplicate {what} (same as {_at(path, seen[k])})")
                    continue
                seen[k] = i
            out.append(item)
        return tuple(out)

    return parse_list


class _Table:
    """A dataclass's fields with their parsers, computed once per class: introspecting the
    class (dataclasses.fields()) for each item was a large part of loading 100k routes."""

    __slots__ = ("known", "parsers", "required")

    def __init__(self, cls: type[Any], parsers: Mapping[str, _Parser]) -> None:
        names = [f.name for f in fields(cls)]
        # A field without a parser would pass as "unknown field": refuse at import instead.
        if set(parsers) != set(names):
            raise TypeError(f"{cls.__name__}: parsers for {sorted(parsers)}, fields {names}")
        self.parsers: dict[str, _Parser] = dict(parsers)
        self.known: list[str] = names  # in field order, for "did you mean"
        self.required: tuple[str, ...] = tuple(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        )


def _fields_of(table: _Table, value: Any, path: str, e: _Errors) -> dict[str, Any] | None:
    """Check a mapping against a class's fields (unknown, missing) and parse each given one;
    fields not given are left to the class's defaults, unparsed."""
    # A plain dict is the common case, and checking it against the Mapping ABC costs more.
    if type(value) is not dict and not isinstance(value, Mapping):
        e.add(path, f"expected a mapping, got {_type_name(value)}")
        return None
    parsers = table.parsers
    out: dict[str, Any] = {}
    for key, raw in value.items():
        parse = parsers.get(key)
        if parse is None:
            hint = difflib.get_close_matches(str(key), table.known, n=1)
            e.add(
                _at(path, str(key)),
                "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            )
            continue
        out[key] = parse(raw, f"{path}.{key}" if path else key, e)
    for name in table.required:
        if name not in value:
            e.add(_at(path, name), "required field is missing")
    return out


def _make(cls: type[Any], kwargs: dict[str, Any] | None, e: _Errors, errors_before: int) -> Any:
    # Build only when nothing in this object failed: a failed field parsed to None.
    return cls(**kwargs) if kwargs is not None and len(e.fields) == errors_before else None


def _object(cls: type[Any], parsers: Mapping[str, _Parser]) -> _Parser:
    table = _Table(cls, parsers)

    def parse(value: Any, path: str, e: _Errors) -> Any:
        n = len(e.fields)
        return _make(cls, _fields_of(table, value, path, e), e, n)

    return parse


# -- upstreams ----------------------------------------------------------------------------------


_parse_target_object = _object(Target, {"address": _address, "weight": _ranged(1, 1000)})


def _target(value: Any, path: str, e: _Errors) -> Target | None:
    if isinstance(value, str):
        address = _address(value, _at(path, "address"), e)
        return None if address is None else Target(address)
    if not isinstance(value, Mapping):
        e.add(path, f'expected "host:port" or {{address, weight}}, got {_type_name(value)}')
        return None
    target: Target | None = _parse_target_object(value, path, e)
    return target


def _hash_on(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is None or text == "client_ip":
        return text
    kind, sep, name = text.partition(":")
    if kind != "header" or not sep or not _TOKEN_RE.fullmatch(name):
        e.add(path, f'must be "client_ip" or "header:<header name>"; got {_short(text)}')
        return None
    return text


def _health_path(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is not None and (not text.startswith("/") or _BAD_PATH_RE.search(text)):
        e.add(path, 'must start with "/" and contain no whitespace or control characters')
        return None
    return text


def _sni(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is not None and not _is_dns_name(text.removesuffix(".")):
        e.add(path, f"invalid server name {_short(text)}: expected a DNS name")
        return None
    return text


def _pem(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is not None and "-----BEGIN" not in text:
        e.add(path, 'expected a PEM string ("-----BEGIN ...")')
        return None
    return text


def _ca_bundle(value: Any, path: str, e: _Errors) -> str | None:
    text = _pem(value, path, e)
    if text is not None:
        problem = check_ca_bundle(text)
        if problem is not None:
            e.add(path, problem)
            return None
    return text


_UPSTREAM_PARSERS: dict[str, _Parser] = {
    "id": _id,
    "targets": _list_of(
        _target,
        key=lambda t: _split_address(t.address),
        what="target address",
        sub="address",
        non_empty=True,
    ),
    "balance": _choice(BALANCES),
    "hash_on": _hash_on,
    "tls": _bool,
    "sni": _optional(_sni),
    "verify": _bool,
    "ca": _optional(_ca_bundle),
    "keepalive": _ranged(0),
    "timeouts": _object(Timeouts, dict.fromkeys(("connect", "read", "idle"), _positive)),
    "health": _optional(
        _object(
            HealthCheck,
            {
                "path": _health_path,
                "interval": _positive,
                "timeout": _positive,
                "healthy": _ranged(1),
                "unhealthy": _ranged(1),
            },
        )
    ),
    "passive": _object(Passive, {"max_fails": _ranged(0), "fail_timeout": _positive}),
}
_UPSTREAM_TABLE = _Table(Upstream, _UPSTREAM_PARSERS)


def _upstream(value: Any, path: str, e: _Errors) -> Upstream | None:
    n = len(e.fields)
    kw = _fields_of(_UPSTREAM_TABLE, value, path, e)
    if kw is None:
        return None
    targets = kw.get("targets") or ()
    # Weights mean "weighted" unless a policy was chosen explicitly.
    if "balance" not in kw and any(t.weight != 1 for t in targets):
        kw["balance"] = "weighted"
    balance = kw.get("balance", "round_robin")  # None: already reported as invalid
    if kw.get("hash_on") not in (None, "client_ip") and balance not in (None, "hash"):
        e.add(_at(path, "hash_on"), "hashing on a header needs balance: hash")
    if kw.get("ca") is not None and not kw.get("tls"):
        e.add(_at(path, "ca"), "trusted CAs only apply to tls: true upstreams")
    elif kw.get("ca") is not None and kw.get("verify") is False:
        # Silently unchecked would be worse than refused: the operator meant to pin or trust.
        e.add(_at(path, "ca"), "trusted CAs have no effect with verify: false")
    upstream: Upstream | None = _make(Upstream, kw, e, n)
    return upstream


# -- routes -------------------------------------------------------------------------------------


def _method(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    # Check before upper(): "ß".upper() is "SS", which would sneak past the token check.
    if text is not None and not _TOKEN_RE.fullmatch(text):
        e.add(path, f"invalid method {_short(text)}")
        return None
    return None if text is None else text.upper()


def _template(value: Any, path: str, e: _Errors) -> str | None:
    text = _str(value, path, e)
    if text is not None and _BAD_PATH_RE.search(text):
        e.add(path, "must not contain whitespace or control characters")
        return None
    return text


def _size(value: Any, path: str, e: _Errors) -> int | None:
    """A size in bytes: an integer, or a string like the CLI's ("10m", "512k", "4096")."""
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            e.add(path, str(exc))
            return None
    if isinstance(value, bool) or not isinstance(value, int):
        e.add(path, f'expected a size in bytes ("10m", 4096), got {_type_name(value)}')
        return None
    if value < 0:
        e.add(path, "must not be negative")
        return None
    return value


def _header_edits(not_editable: frozenset[str]) -> _Parser:
    return _object(
        HeaderEdits,
        {
            "set": _header_map(not_editable),
            "add": _header_map(not_editable),
            "remove": _list_of(_header_name(not_editable), key=str.lower, what="header name"),
        },
    )


_ROUTE_PARSERS: dict[str, _Parser] = {
    "id": _id,
    "hosts": _list_of(_host_pattern, key=lambda h: h, what="host"),
    "path": lambda value, path, e: (
        value if isinstance(value, str) and _lone_surrogate(value) < 0 else _str(value, path, e)
    ),
    "path_type": _choice(PATH_TYPES),
    "methods": _list_of(_method, key=lambda m: m, what="method"),
    "headers": _header_map(),
    "priority": _ranged(-1_000_000, 1_000_000),
    "upstream": _optional(_id),
    "redirect": _optional(_object(Redirect, {"to": _template, "code": _choice(REDIRECT_CODES)})),
    "strip_prefix": _bool,
    "rewrite": _optional(_template),
    "request_headers": _header_edits(REQUEST_HEADERS_NOT_EDITABLE),
    "response_headers": _header_edits(RESPONSE_HEADERS_NOT_EDITABLE),
    "preserve_host": _bool,
    "retries": _ranged(0, 10),
    "enabled": _bool,
    "max_body_size": _optional(_size),
    "websocket": _bool,
}
_ROUTE_TABLE = _Table(Route, _ROUTE_PARSERS)


def _route(value: Any, path: str, e: _Errors) -> Route | None:
    n = len(e.fields)
    kw = _fields_of(_ROUTE_TABLE, value, path, e)
    if kw is None:
        return None
    path_type = kw.get("path_type", "prefix")
    route_path = kw.get("path", "/")
    is_regex = path_type == "regex"
    groups: int | None = None
    if not isinstance(route_path, str):
        pass  # already reported
    elif is_regex:
        try:
            groups = re.compile(route_path).groups
        except re.error as exc:
            e.add(_at(path, "path"), f"invalid regular expression: {exc}")
    elif path_type == "prefix" or path_type == "exact":
        if not route_path.startswith("/"):
            e.add(_at(path, "path"), f'must start with "/"; got {_short(route_path)}')
        elif _BAD_PATH_RE.search(route_path):
            e.add(_at(path, "path"), "must not contain whitespace or control characters")
        elif "?" in route_path or "#" in route_path:
            # Routes match the path without its query, so such a route could never match.
            e.add(_at(path, "path"), 'must not contain "?" or "#"')
    rewrite = kw.get("rewrite")
    if rewrite is None:
        pass
    elif not is_regex:
        e.add(_at(path, "rewrite"), "only regex routes (path_type: regex) can rewrite")
    elif groups is not None:
        refs = [int(one or many) for one, many in _GROUP_REF_RE.findall(rewrite)]
        if refs and max(refs) > groups:
            e.add(
                _at(path, "rewrite"),
                f"${max(refs)} refers to a group the regex lacks (it has {groups})",
            )
    if is_regex and kw.get("strip_prefix"):
        e.add(_at(path, "strip_prefix"), "only prefix and exact routes can strip a prefix")
    has_upstream = value.get("upstream") is not None
    has_redirect = value.get("redirect") is not None
    if has_upstream and has_redirect:
        for name in ("upstream", "redirect"):
            e.add(_at(path, name), "give either upstream or redirect, not both")
    elif not (has_upstream or has_redirect):
        e.add(_at(path, "upstream"), "one of upstream or redirect is required")
    route: Route | None = _make(Route, kw, e, n)
    return route


# -- listeners and certificates -----------------------------------------------------------------


_listener = _object(Listener, {"id": _id, "listen": _address, "upstream": _id, "tls": _bool})
_certificate_fields = _object(
    Certificate,
    {
        "id": _id,
        "names": _list_of(_host_pattern, key=lambda h: h, what="name", non_empty=True),
        "cert": _pem,
        "key": _pem,
        "default": _bool,
    },
)


def _certificate(value: Any, path: str, e: _Errors) -> Certificate | None:
    n = len(e.fields)
    cert: Certificate | None = _certificate_fields(value, path, e)
    if cert is None:
        return None
    for field_name, message in check_certificate(cert.cert, cert.key, cert.names):
        e.add(_at(path, field_name), message)
    return cert if len(e.fields) == n else None


_ITEM_PARSERS: dict[str, _Parser] = {
    "routes": _route,
    "upstreams": _upstream,
    "listeners": _listener,
    "certificates": _certificate,
}


def _build_one(parse: _Parser, data: Any, cls: type[_T]) -> _T:
    e = _Errors()
    item = parse(data, "", e)
    if e.fields:
        raise ValidationError(e.fields)
    return cast(_T, item)


@overload
def from_dict(kind: Literal["routes"], data: Any) -> Route: ...
@overload
def from_dict(kind: Literal["upstreams"], data: Any) -> Upstream: ...
@overload
def from_dict(kind: Literal["listeners"], data: Any) -> Listener: ...
@overload
def from_dict(kind: Literal["certificates"], data: Any) -> Certificate: ...
@overload
def from_dict(kind: str, data: Any) -> Item: ...
def from_dict(kind: str, data: Any) -> Item:
    """Validate one item of `kind` (one of KINDS) given in its JSON shape and build it.

    Raises ValidationError naming every offending field (paths relative to the item), and
    ValueError for an unknown kind.
    """
    parse = _ITEM_PARSERS.get(kind)
    if parse is None:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    e = _Errors()
    item: Item = parse(data, "", e)
    if e.fields:
        raise ValidationError(e.fields)
    return item


def kind_of(item: Item) -> str:
    """The kind ("routes", "upstreams", ...) that an item belongs to."""
    for kind, cls in KIND_TYPES.items():
        if isinstance(item, cls):
            return kind
    raise TypeError(f"not a config item: {type(item).__name__}")


# -- serialisation ------------------------------------------------------------------------------


def _is_default(f: Field[Any], value: Any) -> bool:
    if f.default is not MISSING:
        return bool(value == f.default)
    if f.default_factory is not MISSING:
        return bool(value == f.default_factory())
    return False  # required: always written


def _plain(value: Any) -> Any:
    if isinstance(value, Target):
        return (
            value.address
            if value.weight == 1
            else {"address": value.address, "weight": value.weight}
        )
    if is_dataclass(value) and not isinstance(value, type):
        # An explicit round_robin with weights must stay explicit: left out, it would load
        # back as the implied "weighted".
        keep = isinstance(value, Upstream) and any(t.weight != 1 for t in value.targets)
        return {
            f.name: _plain(getattr(value, f.name))
            for f in fields(value)
            if not _is_default(f, getattr(value, f.name)) or (keep and f.name == "balance")
        }
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)  # "connect: 3" reads better than "connect: 3.0" and loads back equal
    return value


def to_dict(item: Item | Config) -> dict[str, Any]:
    """The JSON shape of an item (or a whole Config), leaving out fields equal to their defaults.

    `from_dict(kind, to_dict(x)) == x` for every valid item.
    """
    result: dict[str, Any] = _plain(item)
    return result


# -- whole configs ------------------------------------------------------------------------------


def _cross_check(
    e: _Errors, ids: Mapping[str, list[Any]], upstream_refs: list[tuple[str, Any]]
) -> None:
    """Duplicate ids per kind, and upstream references that name no upstream."""
    for kind, kind_ids in ids.items():
        first: dict[str, int] = {}
        for i, item_id in enumerate(kind_ids):
            if not isinstance(item_id, str):
                continue
            if item_id in first:
                e.add(
                    f"{kind}[{i}].id", f"duplicate id {item_id!r} (also {kind}[{first[item_id]}])"
                )
            else:
                first[item_id] = i
    known = {i for i in ids.get("upstreams", []) if isinstance(i, str)}
    for path, ref in upstream_refs:
        if isinstance(ref, str) and ref not in known:
            e.add(path, f"unknown upstream {ref!r}")


def config_from_dict(data: Any) -> Config:
    """Validate `{upstreams, routes, listeners, certificates}` (each optional) into a Config.

    Checks every item (paths like ``routes[3].upstream``), duplicate ids per kind and that
    every route's and listener's upstream exists in the config.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(
            {"<root>": f"expected a mapping with {', '.join(KINDS)}; got {_type_name(data)}"}
        )
    e = _Errors()
    items: dict[str, tuple[Any, ...]] = {}
    ids: dict[str, list[Any]] = {}
    refs: list[tuple[str, Any]] = []
    for key in data:
        if key not in KINDS:
            e.add(str(key), f"unknown section; expected one of {', '.join(KINDS)}")
    for kind in KINDS:
        raw = data.get(kind)
        if raw is None:
            raw = []
        parsed = _list_of(_ITEM_PARSERS[kind])(raw, kind, e)
        items[kind] = parsed or ()
        if not isinstance(raw, list | tuple):
            continue
        # Cross checks use the raw ids, so one bad upstream does not also flag every route
        # that names it.
        ids[kind] = [x.get("id") if isinstance(x, Mapping) else None for x in raw]
        if kind in ("routes", "listeners"):
            refs += [
                (f"{kind}[{i}].upstream", x.get("upstream"))
                for i, x in enumerate(raw)
                if isinstance(x, Mapping)
            ]
    _cross_check(e, ids, refs)
    e.raise_if_any()
    return Config(**items)


def check_config(config: Config) -> None:
    """Check a Config built from valid items: duplicate ids and upstream references.

    For writers that change one item of a stored config: build the new Config and call this.
    """
    e = _Errors()
    ids = {kind: [item.id for item in getattr(config, kind)] for kind in KINDS}
    refs: list[tuple[str, Any]] = [
        (f"{kind}[{i}].upstream", item.upstream)
        for kind in ("routes", "listeners")
        for i, item in enumerate(getattr(config, kind))
    ]
    _cross_check(e, ids, refs)
    e.raise_if_any()


def config_to_dict(config: Config) -> dict[str, Any]:
    """The JSON shape of a whole config; empty sections are left out."""
    return to_dict(config)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}"
        detail = "; ".join(p for p in (exc.context, exc.problem) if p)
        return f"{where}: {detail}" if detail else where
    return f"invalid YAML: {exc}"


# libyaml's loader when PyYAML was built with it.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MISSING_DOC = object()


def loads_config(text: str | bytes) -> Config:
    """Parse YAML (or JSON) text into a validated Config.

    YAML errors and a top level that is not a mapping are reported on the field "<file>".
    """
    data: Any = _MISSING_DOC
    if text.lstrip()[:1] in ("{", b"{"):
        # JSON is YAML, but json parses a 100k-route file ~100x faster than any YAML loader.
        with contextlib.suppress(ValueError):  # the YAML parser then says where it is wrong
            data = json.loads(text)
    try:
        if data is _MISSING_DOC:
            data = yaml.load(text, Loader=_SafeLoader)  # a safe loader (C or Python)
    except yaml.YAMLError as exc:
        raise ValidationError({"<file>": _yaml_problem(exc)}) from None
    if not isinstance(data, Mapping):
        message = f"the top level must be a mapping with {', '.join(KINDS)}"
        raise ValidationError({"<file>": f"{message}; got {_type_name(data)}"})
    return config_from_dict(data)


def load_config(source: str | os.PathLike[str]) -> Config:
    """Read a YAML or JSON file into a validated Config (OSError if it cannot be read)."""
    with open(source, "rb") as f:  # bytes: YAML detects the encoding and reports bad bytes
        return loads_config(f.read())


_YAML_BREAKS = re.compile("[\x85\u2028\u2029]")


# libyaml's emitter when PyYAML has it: exporting 10k routes is several times faster.
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[misc]
    """Block style, with multi-line strings (PEM) written as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = None
    if _YAML_BREAKS.search(data):
        # With allow_unicode PyYAML writes NEL/LS/PS raw in plain and literal scalars, and
        # they load back as line breaks; double quotes escape them.
        style = '"'
    elif "\n" in data:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(config: Config) -> str:
    """The config as YAML (block style, keys in dataclass field order) that loads back equal."""
    text: str = yaml.dump(
        config_to_dict(config),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )
    return text
