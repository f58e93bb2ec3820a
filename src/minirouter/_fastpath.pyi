"""Type stub for the compiled fast path; the API is the one in `_fastpath_py` (the spec)."""

from collections.abc import Iterable, Mapping, Sequence

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

def normalize_host(host: str) -> str: ...

class Edits:
    """Compiled `HeaderEdits`; opaque."""

    def __bool__(self) -> bool: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def compile_edits(edits: HeaderEdits | None) -> Edits: ...

class Match:
    @property
    def route(self) -> Route: ...
    @property
    def captures(self) -> tuple[str, ...]: ...
    @property
    def path(self) -> str: ...
    @property
    def request_edits(self) -> Edits: ...
    @property
    def response_edits(self) -> Edits: ...
    def __init__(
        self,
        route: Route,
        captures: tuple[str, ...],
        path: str,
        request_edits: Edits,
        response_edits: Edits,
    ) -> None: ...
    def __eq__(self, other: object) -> bool: ...

class Candidate:
    @property
    def route_id(self) -> str: ...
    @property
    def matched(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    def __init__(self, route_id: str, matched: bool, reason: str) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Explanation:
    @property
    def winner(self) -> Match | None: ...
    @property
    def candidates(self) -> list[Candidate]: ...
    def __init__(self, winner: Match | None, candidates: list[Candidate] | None = None) -> None: ...
    def __eq__(self, other: object) -> bool: ...

class RouteTable:
    def __init__(
        self,
        routes: Iterable[Route] | None,
        previous: RouteTable | None = None,
        changes: Mapping[str, Route | None] | None = None,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def routes(self) -> tuple[Route, ...]: ...
    @property
    def uses_headers(self) -> bool: ...
    def match(
        self, host: str, path: str, method: str, headers: Mapping[str, str] | None = None
    ) -> Match | None: ...
    def explain(
        self, host: str, path: str, method: str, headers: Mapping[str, str] | None = None
    ) -> Explanation: ...

def build_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    host: bytes,
    client_ip: bytes,
    proto: bytes,
    forwarded_host: bytes,
    edits: Edits | None,
    upgrade: bytes | None,
    content_length: int | None,
    chunked: bool,
) -> bytes: ...
def build_response_head(
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    edits: Edits | None,
    keep_alive: bool,
    upgrade: bytes | None,
    content_length: int | None,
    chunked: bool,
) -> bytes: ...

SIMPLE_HEAD_LIMIT: int

def parse_simple_response(
    data: bytes,
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool, bytes] | None: ...
def parse_simple_request(
    data: bytes, max_request_line: int, max_header_size: int, max_headers: int
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], str, bool] | None: ...
