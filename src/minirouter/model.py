"""The config data model: Route, Upstream, Target, Listener, Certificate.

One JSON shape everywhere (store values, API bodies, YAML files); see DESIGN.md.
Every object is an immutable dataclass; build them from plain data with
`from_dict` so that validation always runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    keepalive: int = 64
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: HealthCheck | None = None
    passive: Passive = field(default_factory=Passive)


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    set: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


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
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)
    preserve_host: bool = False
    retries: int = 1
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Listener:
    id: str
    listen: str
    upstream: str


@dataclass(frozen=True, slots=True)
class Certificate:
    id: str
    names: tuple[str, ...]
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Config:
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()
    listeners: tuple[Listener, ...] = ()
    certificates: tuple[Certificate, ...] = ()
