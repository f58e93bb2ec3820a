"""The fast-path API in plain Python: the readable spec, and the fallback.

`minirouter._fastpath` (Cython) implements exactly the same API and must give exactly the same
answers; `tests/test_fastpath.py` checks that with Hypothesis. When the two disagree, this module
is right by definition, so it is written to be read, not to be fast. It still uses the same data
structures as the compiled one (hash maps keyed by host, by wildcard suffix, by path and by path
prefix), so its cost does not grow with the number of literal routes either.

Which route wins (DESIGN.md, "Which route wins"): among the routes whose host, path, method and
header conditions all match, the one with the higher priority; then the more specific host (exact >
wildcard with the longer suffix > any host); then the more specific path (exact > longer prefix >
regex); then the smaller id. Route ids are unique within a table, so the order is total.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from minirouter.model import HeaderEdits, Route

__all__ = [
    "Candidate",
    "Edits",
    "Explanation",
    "Match",
    "RouteTable",
    "build_request_head",
    "build_response_head",
    "compile_edits",
    "normalize_host",
    "parse_simple_request",
    "parse_simple_response",
]

# --------------------------------------------------------------------------------------- hosts


def normalize_host(host: str) -> str:
    """Lower-case `host`, drop its port and one trailing dot: "[::1]:8080" -> "::1"."""
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            host = host[1:end]
    elif host.count(":") == 1:
        # Exactly one colon is "name:port". More than one without brackets is a bare IPv6
        # literal, which has no port to strip.
        host = host.partition(":")[0]
    if host.endswith("."):
        host = host[:-1]
    return host


def _wildcard_suffixes(host: str) -> Iterator[str]:
    """The suffixes a `*.suffix` pattern could stand for in `host`, longest first.

    "a.b.example.com" -> "b.example.com", "example.com", "com". At least one label must stay in
    front of the suffix, so `*.example.com` never matches "example.com" itself.
    """
    for i, char in enumerate(host):
        if char == "." and i > 0:
            yield host[i + 1 :]


# ------------------------------------------------------------------------------- precedence

# Specificity ranks compare as tuples, bigger = more specific; (kind, length) keeps "an exact host
# beats every wildcard" free of magic numbers.
Rank = tuple[int, int]
HOST_EXACT: Rank = (2, 0)
HOST_ANY: Rank = (0, 0)
PATH_EXACT: Rank = (2, 0)
PATH_REGEX: Rank = (0, 0)


def _host_wildcard(suffix: str) -> Rank:
    return (1, len(suffix))


def _path_prefix(prefix: str) -> Rank:
    return (1, len(prefix))


# A sort key: the smallest key wins.
Key = tuple[int, int, int, int, int, str]


def _key(route: Route, host_rank: Rank, path_rank: Rank) -> Key:
    return (
        -route.priority,
        -host_rank[0],
        -host_rank[1],
        -path_rank[0],
        -path_rank[1],
        route.id,
    )


# --------------------------------------------------------------------------------------- edits

# Framing and connection management belong to the core (it decides Content-Length vs chunked,
# keep-alive, upgrades); a route edit touching them could make the upstream read a different
# message boundary than we write (request smuggling), so such edits are ignored.
_EDIT_PROTECTED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
# RFC 9110 field-name token characters: anything else (":" or a space above all) could forge a
# second header inside the name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_BYTES = (b"\r", b"\n", b"\x00")


def _is_clean(data: bytes) -> bool:
    """True if `data` holds no CR, LF or NUL, the bytes that could split a header line."""
    return not any(bad in data for bad in _BAD_BYTES)


def _scrub(data: bytes) -> bytes:
    """`data` without CR, LF and NUL (for the values the router itself writes)."""
    return data.translate(None, b"\r\n\x00")


def _edit_name(name: str) -> bytes | None:
    """The header name as bytes, or None when an edit must not touch it."""
    if not _TOKEN.fullmatch(name):
        return None
    raw = name.encode("ascii")
    lowered = raw.lower()
    if lowered in _EDIT_PROTECTED or lowered.startswith(b"proxy-"):
        return None
    return raw


def _edit_value(value: str) -> bytes | None:
    raw = value.encode("utf-8")
    return raw if _is_clean(raw) else None


@dataclass(frozen=True, slots=True)
class Edits:
    """Compiled `HeaderEdits`: names and values as bytes, ready for the head builders.

    Opaque to callers: pass it to `build_request_head` / `build_response_head`.
    """

    remove_names: frozenset[bytes] = frozenset()  # lower-cased
    set_headers: tuple[tuple[bytes, bytes], ...] = ()
    add_headers: tuple[tuple[bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove_names or self.set_headers or self.add_headers)


_NO_EDITS = Edits()


def compile_edits(edits: HeaderEdits | None) -> Edits:
    """Compile a route's `HeaderEdits` once, at table build.

    Names that are not valid tokens, values with CR/LF/NUL, and names of framing or hop-by-hop
    headers are left out (model validation rejects them before they get here).
    """
    if edits is None:
        return _NO_EDITS
    remove = frozenset(
        raw.lower() for name in edits.remove if (raw := _edit_name(name)) is not None
    )
    set_headers = tuple(
        (raw, value)
        for name, text in edits.set.items()
        if (raw := _edit_name(name)) is not None and (value := _edit_value(text)) is not None
    )
    add_headers = tuple(
        (raw, value)
        for name, text in edits.add.items()
        if (raw := _edit_name(name)) is not None and (value := _edit_value(text)) is not None
    )
    if not (remove or set_headers or add_headers):
        return _NO_EDITS
    return Edits(remove, set_headers, add_headers)


def _apply_edits(lines: list[tuple[bytes, bytes]], edits: Edits) -> list[tuple[bytes, bytes]]:
    """Route edits, in order: remove, then set (replace every header of that name), then add."""
    lines = [(name, value) for name, value in lines if name.lower() not in edits.remove_names]
    for set_name, set_value in edits.set_headers:
        wanted = set_name.lower()
        replaced: list[tuple[bytes, bytes]] = []
        placed = False
        for name, value in lines:
            if name.lower() != wanted:
                replaced.append((name, value))
            elif not placed:
                # The first header of that name takes the new value, in place; the others go.
                replaced.append((set_name, set_value))
                placed = True
        if not placed:
            replaced.append((set_name, set_value))
        lines = replaced
    return [*lines, *edits.add_headers]


# ------------------------------------------------------------------------------ route table


@dataclass(frozen=True, slots=True)
class Match:
    """The winning route for one request, and what to forward."""

    route: Route
    captures: tuple[str, ...]
    path: str
    request_edits: Edits
    response_edits: Edits


@dataclass(frozen=True, slots=True)
class Candidate:
    """One enabled route in an explanation: did it match, and if it did not win, why."""

    route_id: str
    matched: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    winner: Match | None
    candidates: list[Candidate] = field(default_factory=list)


# `$1`..`$9`, or `${N}` for any group number; `$0` / `${0}` is the whole match.
_TEMPLATE_REF = re.compile(r"\$(?:([0-9])|\{([0-9]+)\})")

Template = tuple[str | int, ...]  # literal text, or the number of the group to insert


def _compile_template(template: str, groups: int) -> Template:
    parts: list[str | int] = []
    pos = 0
    for ref in _TEMPLATE_REF.finditer(template):
        parts.append(template[pos : ref.start()])
        number = int(ref.group(1) or ref.group(2))
        # A reference to a group the pattern does not have expands to nothing, like a group
        # that did not take part in the match.
        parts.append(number if number <= groups else "")
        pos = ref.end()
    parts.append(template[pos:])
    return tuple(part for part in parts if part != "")


def _expand(template: Template, found: re.Match[str]) -> str:
    return "".join(
        part if isinstance(part, str) else (found.group(part) or "") for part in template
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Compiled:
    """A route with everything the lookup needs precomputed."""

    route: Route
    exact_hosts: frozenset[str]
    wildcard_suffixes: frozenset[str]
    any_host: bool
    methods: frozenset[str] | None  # None: any method
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, value)
    regex: re.Pattern[str] | None
    rewrite: Template | None
    request_edits: Edits
    response_edits: Edits


def _compile_route(route: Route) -> _Compiled:
    if route.path_type not in ("exact", "prefix", "regex"):
        raise ValueError(f"route {route.id!r}: unknown path_type {route.path_type!r}")
    exact_hosts: set[str] = set()
    suffixes: set[str] = set()
    for pattern in route.hosts:
        if pattern.startswith("*."):
            suffixes.add(normalize_host(pattern[2:]))
        else:
            exact_hosts.add(normalize_host(pattern))
    regex = None
    rewrite = None
    if route.path_type == "regex":
        try:
            regex = re.compile(route.path)
        except re.error as err:
            raise ValueError(f"route {route.id!r}: invalid regex {route.path!r}: {err}") from err
        if route.rewrite is not None:
            rewrite = _compile_template(route.rewrite, regex.groups)
    return _Compiled(
        route=route,
        exact_hosts=frozenset(exact_hosts),
        wildcard_suffixes=frozenset(suffixes),
        any_host=not route.hosts,
        methods=frozenset(route.methods) if route.methods else None,
        headers=tuple((name.lower(), value) for name, value in route.headers.items()),
        regex=regex,
        rewrite=rewrite,
        request_edits=compile_edits(route.request_headers),
        response_edits=compile_edits(route.response_headers),
    )


# The predicates below are shared by `match` (which reaches candidates through the indexes) and
# `explain` (which checks every route), so the two cannot disagree.


def _host_rank(compiled: _Compiled, host: str) -> Rank | None:
    """How specifically the route's hosts match `host` (normalised); None if they do not."""
    if compiled.any_host:
        return HOST_ANY
    if host in compiled.exact_hosts:
        return HOST_EXACT
    for suffix in _wildcard_suffixes(host):
        if suffix in compiled.wildcard_suffixes:
            return _host_wildcard(suffix)
    return None


def _regex_match(compiled: _Compiled, path: str) -> re.Match[str] | None:
    assert compiled.regex is not None
    return compiled.regex.match(path)


def _path_rank(compiled: _Compiled, path: str) -> tuple[Rank, re.Match[str] | None] | None:
    route = compiled.route
    if route.path_type == "exact":
        return (PATH_EXACT, None) if path == route.path else None
    if route.path_type == "prefix":
        return (_path_prefix(route.path), None) if path.startswith(route.path) else None
    found = _regex_match(compiled, path)
    return (PATH_REGEX, found) if found is not None else None


def _condition_failure(
    compiled: _Compiled, method: str, headers: Mapping[str, str] | None
) -> str | None:
    """Why the method / header conditions reject the request; None if they accept it."""
    if compiled.methods is not None and method not in compiled.methods:
        return f"method {method} not allowed"
    for name, value in compiled.headers:
        if headers is None or headers.get(name) != value:
            return f"header {name} does not match"
    return None


def _forward_path(compiled: _Compiled, path: str, found: re.Match[str] | None) -> str:
    route = compiled.route
    if route.path_type == "regex":
        if compiled.rewrite is not None and found is not None:
            return _expand(compiled.rewrite, found)
        return path
    if not route.strip_prefix:
        return path
    if route.path_type == "exact":
        return "/"
    rest = path[len(route.path) :]
    return rest if rest.startswith("/") else "/" + rest


def _make_match(compiled: _Compiled, path: str, found: re.Match[str] | None) -> Match:
    return Match(
        route=compiled.route,
        captures=found.groups("") if found is not None else (),
        path=_forward_path(compiled, path, found),
        request_edits=compiled.request_edits,
        response_edits=compiled.response_edits,
    )


@dataclass(slots=True, eq=False)
class _Found:
    """A candidate that matched, with the ranks it matched at."""

    compiled: _Compiled
    host_rank: Rank
    path_rank: Rank
    regex_match: re.Match[str] | None = None

    @property
    def key(self) -> Key:
        return _key(self.compiled.route, self.host_rank, self.path_rank)


def _by_precedence(compiled: _Compiled) -> tuple[int, str]:
    # Within one index slot every route has the same host and path rank.
    return (-compiled.route.priority, compiled.route.id)


class _Bucket:
    """The routes reachable through one host key (an exact host, a wildcard suffix, or any)."""

    __slots__ = ("exact_paths", "prefix_lengths", "prefixes", "regexes")

    def __init__(self) -> None:
        self.exact_paths: dict[str, list[_Compiled]] = {}
        self.prefixes: dict[str, list[_Compiled]] = {}
        self.prefix_lengths: list[int] = []  # distinct prefix lengths, longest first
        self.regexes: list[_Compiled] = []

    def add(self, compiled: _Compiled) -> None:
        route = compiled.route
        if route.path_type == "exact":
            self.exact_paths.setdefault(route.path, []).append(compiled)
        elif route.path_type == "prefix":
            self.prefixes.setdefault(route.path, []).append(compiled)
        else:
            self.regexes.append(compiled)

    def finish(self) -> None:
        for group in (*self.exact_paths.values(), *self.prefixes.values(), self.regexes):
            group.sort(key=_by_precedence)
        self.prefix_lengths = sorted({len(prefix) for prefix in self.prefixes}, reverse=True)

    def literal_groups(self, path: str) -> Iterator[tuple[Rank, list[_Compiled]]]:
        """The groups of exact / prefix routes whose path matches, one dict lookup each."""
        if (group := self.exact_paths.get(path)) is not None:
            yield PATH_EXACT, group
        for length in self.prefix_lengths:
            if length <= len(path) and (group := self.prefixes.get(path[:length])) is not None:
                yield (1, length), group


def _first_allowed(
    group: list[_Compiled], method: str, headers: Mapping[str, str] | None
) -> _Compiled | None:
    """The best route of a precedence-sorted group whose method/header conditions pass."""
    for compiled in group:
        if _condition_failure(compiled, method, headers) is None:
            return compiled
    return None


def _lost_because(loser: _Found, winner: _Found) -> str:
    """The first precedence rule where `loser` lost to `winner`."""
    lost, won = loser.compiled.route, winner.compiled.route
    if lost.priority != won.priority:
        return f"lower priority ({lost.priority} < {won.priority})"
    if loser.host_rank != winner.host_rank:
        return "less specific host"
    if loser.path_rank != winner.path_rank:
        return "less specific path"
    return "larger id"


def _route_id(route: Route) -> str:
    return route.id


class RouteTable:
    """An immutable index of the enabled routes; build a new one to change the config."""

    __slots__ = ("_any", "_compiled", "_exact_hosts", "_routes", "_wildcards", "uses_headers")

    def __init__(
        self,
        routes: Iterable[Route] | None,
        previous: RouteTable | None = None,
        changes: Mapping[str, Route | None] | None = None,
    ) -> None:
        # `previous` lets the compiled module reuse the compiled form of unchanged routes, and
        # `changes` (id -> the new Route, None if deleted: every id whose route may differ from
        # `previous`'s) lets it look at those ids only; compiling is cheap enough here not to
        # bother: the result is the same table either way.
        #
        # routes=None (with both): `previous`'s routes with `changes` applied, listed by id.
        # The caller then need not make a tuple of every route for a change of one.
        if routes is None:
            if previous is None or changes is None:
                raise TypeError("routes=None needs previous= and changes=")
            merged = {route.id: route for route in previous.routes}
            for route_id, changed in changes.items():
                if changed is None:
                    merged.pop(route_id, None)
                else:
                    merged[route_id] = changed
            routes = sorted(merged.values(), key=_route_id)
        self._compiled = [_compile_route(route) for route in routes if route.enabled]
        self._routes = tuple(compiled.route for compiled in self._compiled)
        # Only then must a caller build the header mapping that match() takes.
        self.uses_headers: bool = any(route.headers for route in self._routes)
        seen: set[str] = set()
        for route in self._routes:
            if route.id in seen:
                # The precedence order ends with the id; two routes with one id would make
                # the winner depend on input order.
                raise ValueError(f"duplicate route id {route.id!r}")
            seen.add(route.id)

        self._exact_hosts: dict[str, _Bucket] = {}
        self._wildcards: dict[str, _Bucket] = {}
        self._any = _Bucket()
        for compiled in self._compiled:
            if compiled.any_host:
                self._any.add(compiled)
            for host in compiled.exact_hosts:
                self._exact_hosts.setdefault(host, _Bucket()).add(compiled)
            for suffix in compiled.wildcard_suffixes:
                self._wildcards.setdefault(suffix, _Bucket()).add(compiled)
        for bucket in (*self._exact_hosts.values(), *self._wildcards.values(), self._any):
            bucket.finish()

    def __len__(self) -> int:
        return len(self._routes)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The enabled routes, in the order given (by id when made with routes=None)."""
        return self._routes

    def _buckets(self, host: str) -> list[tuple[Rank, _Bucket]]:
        """Every bucket whose host key matches `host`, most specific first."""
        found: list[tuple[Rank, _Bucket]] = []
        if (bucket := self._exact_hosts.get(host)) is not None:
            found.append((HOST_EXACT, bucket))
        if self._wildcards:
            for suffix in _wildcard_suffixes(host):
                if (bucket := self._wildcards.get(suffix)) is not None:
                    found.append((_host_wildcard(suffix), bucket))
        found.append((HOST_ANY, self._any))
        return found

    def match(
        self, host: str, path: str, method: str, headers: Mapping[str, str] | None = None
    ) -> Match | None:
        """The winning route for a request, or None (the router answers 404).

        `host` as sent (normalised here), `path` without the query string, `headers` with
        lower-cased names (only consulted for routes with header conditions).
        """
        buckets = self._buckets(normalize_host(host))
        best: _Found | None = None
        # Literal routes: a dict lookup per bucket and per distinct prefix length.
        for host_rank, bucket in buckets:
            for path_rank, group in bucket.literal_groups(path):
                compiled = _first_allowed(group, method, headers)
                if compiled is not None:
                    found = _Found(compiled, host_rank, path_rank)
                    if best is None or found.key < best.key:
                        best = found
        # Regex routes are the only scan, and only over those that could still win: each
        # bucket's list is in precedence order, so the first one that cannot ends the scan.
        for host_rank, bucket in buckets:
            for compiled in bucket.regexes:
                if best is not None and _key(compiled.route, host_rank, PATH_REGEX) > best.key:
                    break
                if _condition_failure(compiled, method, headers) is not None:
                    continue
                regex_match = _regex_match(compiled, path)
                if regex_match is not None:
                    best = _Found(compiled, host_rank, PATH_REGEX, regex_match)
                    break
        if best is None:
            return None
        return _make_match(best.compiled, path, best.regex_match)

    def explain(
        self, host: str, path: str, method: str, headers: Mapping[str, str] | None = None
    ) -> Explanation:
        """Check every enabled route and say why each one did or did not win."""
        host = normalize_host(host)
        matched: list[_Found] = []
        failed: list[Candidate] = []
        for compiled in self._compiled:
            route_id = compiled.route.id
            host_rank = _host_rank(compiled, host)
            if host_rank is None:
                failed.append(Candidate(route_id, False, "host does not match"))
                continue
            path_found = _path_rank(compiled, path)
            if path_found is None:
                failed.append(Candidate(route_id, False, "path does not match"))
                continue
            failure = _condition_failure(compiled, method, headers)
            if failure is not None:
                failed.append(Candidate(route_id, False, failure))
                continue
            matched.append(_Found(compiled, host_rank, path_found[0], path_found[1]))

        failed.sort(key=lambda candidate: candidate.route_id)
        if not matched:
            return Explanation(None, failed)
        matched.sort(key=lambda found: found.key)
        winner = matched[0]
        candidates = [Candidate(winner.compiled.route.id, True, "winner")]
        candidates += [
            Candidate(found.compiled.route.id, True, _lost_because(found, winner))
            for found in matched[1:]
        ]
        return Explanation(
            _make_match(winner.compiled, path, winner.regex_match), candidates + failed
        )


# ---------------------------------------------------------------------------- head building

# Dropped from every forwarded head: framing (the core writes its own) and hop-by-hop headers.
_HOP_BY_HOP = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
# Requests also lose the headers the router writes itself. X-Forwarded-For and Via are merged,
# not dropped: see build_request_head.
_REQUEST_DROP = _HOP_BY_HOP | {b"host", b"x-forwarded-proto", b"x-forwarded-host"}

Headers = Sequence[tuple[bytes, bytes]]


def _connection_tokens(headers: Headers) -> set[bytes]:
    """The lower-cased names listed in every Connection header: hop-by-hop for this message."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    tokens.add(token)
    return tokens


def _forwardable(name: bytes, value: bytes, drop: frozenset[bytes], listed: set[bytes]) -> bool:
    lowered = name.lower()
    return not (
        lowered in drop
        or lowered.startswith(b"proxy-")
        or lowered in listed
        or not _is_clean(name)
        or not _is_clean(value)
    )


def _framing(content_length: int | None, chunked: bool) -> list[tuple[bytes, bytes]]:
    if content_length is not None:
        return [(b"Content-Length", b"%d" % content_length)]
    if chunked:
        return [(b"Transfer-Encoding", b"chunked")]
    return []


def _serialize(start_line: bytes, lines: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(
        [start_line, *(name + b": " + value + b"\r\n" for name, value in lines), b"\r\n"]
    )


def build_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    *,
    host: bytes,
    client_ip: bytes,
    proto: bytes,
    forwarded_host: bytes,
    edits: Edits | None,
    upgrade: bytes | None,
    content_length: int | None,
    chunked: bool,
) -> bytes:
    """The head to send upstream: client headers minus hop-by-hop ones, plus the router's own.

    The router's headers are added after the hop-by-hop removal, so a client's Connection
    header can never remove them; route edits run last.
    """
    listed = _connection_tokens(headers)
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    via: list[bytes] = []
    for name, value in headers:
        if not _forwardable(name, value, _REQUEST_DROP, listed):
            continue
        lowered = name.lower()
        if lowered == b"x-forwarded-for":
            if value:
                forwarded_for.append(value)
        elif lowered == b"via":
            if value:
                via.append(value)
        else:
            kept.append((name, value))

    lines = [
        (b"Host", _scrub(host)),
        *kept,
        # Several incoming X-Forwarded-For / Via headers become one list each, ours last.
        (b"X-Forwarded-For", b", ".join([*forwarded_for, _scrub(client_ip)])),
        (b"X-Forwarded-Proto", _scrub(proto)),
        (b"X-Forwarded-Host", _scrub(forwarded_host)),
        (b"Via", b", ".join([*via, b"1.1 minirouter"])),
        *_framing(content_length, chunked),
    ]
    if upgrade is not None:
        lines += [(b"Upgrade", _scrub(upgrade)), (b"Connection", b"upgrade")]
    if edits:
        lines = _apply_edits(lines, edits)
    return _serialize(b"%s %s HTTP/1.1\r\n" % (_scrub(method), _scrub(target)), lines)


def build_response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    *,
    edits: Edits | None,
    keep_alive: bool,
    upgrade: bytes | None,
    content_length: int | None,
    chunked: bool,
) -> bytes:
    """The head to send to the client: upstream headers minus hop-by-hop ones, our framing."""
    listed = _connection_tokens(headers)
    lines = [
        (name, value) for name, value in headers if _forwardable(name, value, _HOP_BY_HOP, listed)
    ]
    lines += _framing(content_length, chunked)
    if upgrade is not None:
        lines += [(b"Connection", b"upgrade"), (b"Upgrade", _scrub(upgrade))]
    elif not keep_alive:
        # Keep-alive is the HTTP/1.1 default, so only its absence is announced.
        lines.append((b"Connection", b"close"))
    if edits:
        lines = _apply_edits(lines, edits)
    return _serialize(b"HTTP/1.1 %d %s\r\n" % (status, _scrub(reason)), lines)


# ------------------------------------------------------------------------- response parsing

# The longest response head taken here: longer ones go to llhttp, which applies the limit.
SIMPLE_HEAD_LIMIT = 8192

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([2-5][0-9][0-9]) ([\x20-\x7e]*)\r\n")
# A field line as llhttp reports it: the OWS after the colon dropped, the rest of the value kept.
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e]*)\r\n")
# Headers that change how llhttp frames or ends the message: their responses are left to it.
_FRAMING_ELSEWHERE = frozenset({b"transfer-encoding", b"upgrade", b"proxy-connection"})

SimpleResponse = tuple[int, bytes, list[tuple[bytes, bytes]], bool, bytes]


def _field_lines(data: bytes, pos: int, end: int) -> list[tuple[bytes, bytes]] | None:
    """The field lines from `pos` up to the blank line at `end`; None if one is not simple."""
    fields: list[tuple[bytes, bytes]] = []
    while pos < end + 2:
        field_line = _FIELD_LINE.match(data, pos)
        if field_line is None:
            return None
        name, value = field_line.group(1, 2)
        fields.append((name, value))
        pos = field_line.end()
    return fields


def _connection(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool] | None:
    """(close, keep-alive) from Connection headers that are exactly "close" or "keep-alive";
    None for any other Connection value, or for both."""
    tokens = {value.lower() for name, value in headers if name.lower() == b"connection"}
    if not tokens <= {b"close", b"keep-alive"} or len(tokens) > 1:
        return None
    return b"close" in tokens, b"keep-alive" in tokens


def parse_simple_response(data: bytes) -> SimpleResponse | None:
    """`data` as one whole response, or None to leave it to the full parser (llhttp).

    Taken only when `data` is exactly one response, head and Content-Length body, nothing after:
    an HTTP/1.0 or 1.1 final status (2xx-5xx but 204 and 304) with plain ASCII text, a single
    Content-Length, no Transfer-Encoding or Upgrade, and a Connection header (if any) that is
    exactly "close" or "keep-alive". What it returns is what llhttp reports for the same bytes:
    (status, reason, [(name, value)], keep_alive, body). Anything else, including a response
    split over reads, returns None and takes llhttp's path unchanged: this is a shortcut for the
    common case, never a second opinion on what is valid.
    """
    end = data.find(b"\r\n\r\n", 0, SIMPLE_HEAD_LIMIT)
    status_line = _STATUS_LINE.match(data) if end >= 0 else None
    if status_line is None:
        return None
    status = int(status_line.group(2))
    headers = _field_lines(data, status_line.end(), end)
    connection = _connection(headers) if headers is not None else None
    if headers is None or connection is None or status in (204, 304):  # 204/304: no body
        return None
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
        return None
    if any(name.lower() in _FRAMING_ELSEWHERE for name, _ in headers):
        return None
    body_start = end + 4
    if len(data) - body_start != int(lengths[0]):
        return None
    close, keep = connection
    keep_alive = not close if status_line.group(1) == b"1" else keep
    return status, status_line.group(3), headers, keep_alive, data[body_start:]


_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.([01])\r\n")
# Headers whose requests llhttp frames, upgrades or answers differently: left to it.
_REQUEST_ELSEWHERE = frozenset(
    {b"content-length", b"transfer-encoding", b"upgrade", b"expect", b"proxy-connection"}
)

SimpleRequest = tuple[int, bytes, bytes, list[tuple[bytes, bytes]], str, bool]


def parse_simple_request(
    data: bytes, max_request_line: int, max_header_size: int, max_headers: int
) -> SimpleRequest | None:
    """The request at the start of `data`, or None to leave it to the full parser (llhttp).

    Taken only when the request is whole in `data` and needs nothing of llhttp: GET or HEAD
    with an origin-form target, HTTP/1.0 or 1.1, plain ASCII field lines, no body (no
    Content-Length or Transfer-Encoding), no Upgrade or Expect, a Connection header (if any)
    that is exactly "close" or "keep-alive", and within the three limits (as the core counts
    them). Returns what llhttp reports for it, and where it ends: (end, method, target,
    [(name, value)], version, keep_alive); bytes after `end` (a pipelined request) are not
    looked at. Anything else returns None: this is a shortcut for the common case, never a
    second opinion on what is valid.
    """
    end = data.find(b"\r\n\r\n", 0, SIMPLE_HEAD_LIMIT)
    request_line = _REQUEST_LINE.match(data) if end >= 0 else None
    if request_line is None:
        return None
    method, target, minor = request_line.group(1, 2, 3)
    headers = _field_lines(data, request_line.end(), end)
    connection = _connection(headers) if headers is not None else None
    if headers is None or connection is None or len(target) > max_request_line:
        return None
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > max_header_size or len(headers) > max_headers:
        return None
    if any(name.lower() in _REQUEST_ELSEWHERE for name, _ in headers):
        return None
    close, keep = connection
    version = "1.1" if minor == b"1" else "1.0"
    keep_alive = not close if minor == b"1" else keep
    return end + 4, method, target, headers, version, keep_alive
