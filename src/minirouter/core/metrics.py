"""Per-process counters, gauges and histograms, rendered as Prometheus text (format 0.0.4).

The proxy calls the recording methods on every request, so they are plain dict updates keyed by
tuples and a bisect into a fixed bucket list; all formatting happens in `render()`, which only
runs when something scrapes the admin listener. Single-threaded by design: one `Metrics` per
worker process, used from its event loop only.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "Histogram", "ListenerCounters", "Metrics"]

PREFIX = "minirouter_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Prometheus client defaults: from 5 ms (a local upstream) to 10 s (the slow tail).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Observations of one label set: per-bucket (not cumulative) counts, sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        # One slot per finite bound plus the +Inf slot; cumulated only when rendered.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le means <=).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return out


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value (or `le` bound) the way Prometheus clients print it."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(names: Sequence[str], values: Iterable[object]) -> str:
    pairs = [f'{n}="{escape_label(str(v))}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


class ListenerCounters:
    """The counters of one L4 listener; its connections update the attributes directly."""

    __slots__ = ("bytes_in", "bytes_out", "connect_failures", "connections", "open", "up")

    def __init__(self) -> None:
        self.connections = 0  # accepted, total
        self.open = 0  # open right now
        self.bytes_in = 0  # client -> upstream
        self.bytes_out = 0  # upstream -> client
        self.connect_failures = 0  # a target that could not be reached (or none usable)
        self.up = 0  # 1 while the port is open


class Metrics:
    """Everything one router process reports on /metrics."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.buckets: tuple[float, ...] = tuple(sorted(buckets))
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.request_durations: dict[str, Histogram] = {}
        self.upstream_latencies: dict[str, Histogram] = {}
        self.bytes_received = 0
        self.bytes_sent = 0
        self.open_connections = 0
        self.connections_refused = 0  # over --max-connections with every connection busy
        self.connections_evicted = 0  # idle connections closed to make room at the cap
        self.config_revision = 0
        # Both results exist from the start so that rate() works before the first error.
        self.config_reloads: dict[str, int] = {"ok": 0, "error": 0}
        self.target_up: dict[tuple[str, str], int] = {}
        self.upstream_failures: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.store_connected: int | None = None  # None: not following a store
        self.store_behind_flag = 0  # 1: the store came back behind the revision served
        self.mirror_invalid_items: defaultdict[str, int] = defaultdict(int)
        self.listeners: dict[str, ListenerCounters] = {}
        self.tls_unknown_names = 0  # handshakes refused: no certificate for the SNI name
        self.certificates_loaded: int | None = None  # None: no TLS listener
        self.certificate_expiry: dict[str, float] = {}

    # -- per request (hot path) ------------------------------------------------

    def request_done(
        self, route_id: str, status: int, duration: float, bytes_in: int, bytes_out: int
    ) -> None:
        """One request answered; route_id "" for the router's own answers (no route matched)."""
        self.requests[(route_id, status)] += 1
        hist = self.request_durations.get(route_id)
        if hist is None:
            hist = self.request_durations[route_id] = Histogram(self.buckets)
        hist.observe(duration)
        self.bytes_received += bytes_in
        self.bytes_sent += bytes_out

    def upstream_response(self, upstream_id: str, seconds: float) -> None:
        """Time from sending the request head to receiving the response head."""
        hist = self.upstream_latencies.get(upstream_id)
        if hist is None:
            hist = self.upstream_latencies[upstream_id] = Histogram(self.buckets)
        hist.observe(seconds)

    def upstream_failure(self, upstream_id: str, target: str) -> None:
        self.upstream_failures[(upstream_id, target)] += 1

    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        if self.open_connections > 0:
            self.open_connections -= 1

    def connection_refused(self) -> None:
        """A client connection refused at `--max-connections` (every connection busy)."""
        self.connections_refused += 1

    def connection_evicted(self) -> None:
        """An idle connection closed to make room for a new one at `--max-connections`."""
        self.connections_evicted += 1

    # -- occasional ------------------------------------------------------------

    def set_revision(self, rev: int) -> None:
        self.config_revision = rev

    def reload(self, ok: bool) -> None:
        self.config_reloads["ok" if ok else "error"] += 1

    def set_target_up(self, upstream: str, target: str, up: bool) -> None:
        self.target_up[(upstream, target)] = 1 if up else 0

    def store_up(self, up: bool) -> None:
        """Whether the config store is reachable (store mode only)."""
        self.store_connected = 1 if up else 0

    def set_store_behind(self, flag: bool) -> None:
        """Whether the store came back with a lower revision than the one served (store mode)."""
        self.store_behind_flag = 1 if flag else 0

    def mirror_invalid(self, key: str) -> None:
        """An invalid item met while mirroring the store ("routes/<id>"), skipped."""
        self.mirror_invalid_items[key.partition("/")[0]] += 1

    def listener(self, listener_id: str) -> ListenerCounters:
        """The counters of an L4 listener, created on first use."""
        counters = self.listeners.get(listener_id)
        if counters is None:
            counters = self.listeners[listener_id] = ListenerCounters()
        return counters

    def forget_listener(self, listener_id: str) -> None:
        """Drop the series of a listener that left the config."""
        self.listeners.pop(listener_id, None)

    def set_certificates(self, expiry: dict[str, float | None] | None) -> None:
        """The certificates the TLS listeners can serve: id -> expiry (Unix time).

        None: no listener serves TLS, the series are left out.
        """
        if expiry is None:
            self.certificates_loaded = None
            self.certificate_expiry = {}
            return
        self.certificates_loaded = len(expiry)
        self.certificate_expiry = {cid: at for cid, at in expiry.items() if at is not None}

    def forget_target(self, upstream: str, target: str) -> None:
        """Drop the series of a target that left the config (it would report stale values)."""
        self.target_up.pop((upstream, target), None)
        self.upstream_failures.pop((upstream, target), None)

    # -- exposition ------------------------------------------------------------

    def render(self) -> bytes:
        """All metrics in the Prometheus text exposition format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> str:
            full = PREFIX + name
            out.append(f"# HELP {full} {_escape_help(help_text)}")
            out.append(f"# TYPE {full} {kind}")
            return full

        def samples(
            name: str, label_names: Sequence[str], data: Iterable[tuple[tuple[object, ...], float]]
        ) -> None:
            for values, value in sorted(data, key=lambda kv: tuple(str(v) for v in kv[0])):
                out.append(f"{name}{_labels(label_names, values)} {format_value(value)}")

        def histograms(name: str, label: str, data: dict[str, Histogram]) -> None:
            for key in sorted(data):
                hist = data[key]
                base = f'{label}="{escape_label(key)}"'
                cumulative = hist.cumulative()
                for bound, count in zip((*hist.bounds, math.inf), cumulative, strict=True):
                    out.append(f'{name}_bucket{{{base},le="{format_value(bound)}"}} {count}')
                out.append(f"{name}_sum{{{base}}} {format_value(hist.sum)}")
                out.append(f"{name}_count{{{base}}} {cumulative[-1]}")

        name = family("requests_total", "counter", "HTTP requests answered, by route and status.")
        samples(name, ("route", "status"), self.requests.items())

        name = family(
            "request_duration_seconds", "histogram", "Time to answer a request, by route."
        )
        histograms(name, "route", self.request_durations)

        name = family(
            "upstream_latency_seconds",
            "histogram",
            "Time from sending a request upstream to receiving the response head.",
        )
        histograms(name, "upstream", self.upstream_latencies)

        name = family("bytes_received_total", "counter", "Bytes received from clients.")
        out.append(f"{name} {self.bytes_received}")
        name = family("bytes_sent_total", "counter", "Bytes sent to clients.")
        out.append(f"{name} {self.bytes_sent}")

        name = family("open_connections", "gauge", "Client connections currently open.")
        out.append(f"{name} {self.open_connections}")
        name = family(
            "connections_refused_total",
            "counter",
            "Client connections refused at --max-connections (every connection busy).",
        )
        out.append(f"{name} {self.connections_refused}")
        name = family(
            "connections_evicted_total",
            "counter",
            "Idle client connections closed to make room at --max-connections.",
        )
        out.append(f"{name} {self.connections_evicted}")

        name = family("config_revision", "gauge", "Config revision currently applied.")
        out.append(f"{name} {self.config_revision}")

        name = family("config_reloads_total", "counter", "Config reloads, by result.")
        samples(name, ("result",), (((k,), v) for k, v in self.config_reloads.items()))

        name = family(
            "upstream_target_up", "gauge", "Whether a target passes its health checks (1) or not."
        )
        samples(name, ("upstream", "target"), self.target_up.items())

        name = family(
            "upstream_failures_total",
            "counter",
            "Failed attempts to get a response from a target.",
        )
        samples(name, ("upstream", "target"), self.upstream_failures.items())

        if self.listeners:
            self._render_listeners(family, samples)

        if self.certificates_loaded is not None:
            name = family("tls_certificates", "gauge", "Certificates loaded for TLS termination.")
            out.append(f"{name} {self.certificates_loaded}")
            name = family(
                "tls_unknown_name_total",
                "counter",
                "TLS handshakes refused because no certificate matches the SNI name.",
            )
            out.append(f"{name} {self.tls_unknown_names}")
            name = family(
                "tls_certificate_expiry_timestamp_seconds",
                "gauge",
                "When each loaded certificate expires (Unix time).",
            )
            samples(name, ("certificate",), (((k,), v) for k, v in self.certificate_expiry.items()))

        if self.store_connected is not None:
            name = family("store_up", "gauge", "Whether the config store is reachable (1) or not.")
            out.append(f"{name} {self.store_connected}")
            name = family(
                "store_behind",
                "gauge",
                "Whether the store came back behind the revision served (1: not applied).",
            )
            out.append(f"{name} {self.store_behind_flag}")
            name = family(
                "mirror_invalid_items_total",
                "counter",
                "Invalid items met while mirroring the store (skipped; last good kept), by kind.",
            )
            samples(name, ("kind",), (((k,), v) for k, v in self.mirror_invalid_items.items()))

        out.append("")
        return "\n".join(out).encode("utf-8")

    def _render_listeners(
        self,
        family: Callable[[str, str, str], str],
        samples: Callable[[str, Sequence[str], Iterable[tuple[tuple[object, ...], float]]], None],
    ) -> None:
        items = self.listeners.items()
        for metric, kind, attr, help_text in _LISTENER_SERIES:
            name = family(metric, kind, help_text)
            samples(name, ("listener",), (((lid,), getattr(c, attr)) for lid, c in items))


_LISTENER_SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("l4_listener_up", "gauge", "up", "Whether an L4 listener's port is open (1) or not."),
    ("l4_connections_total", "counter", "connections", "Connections accepted by an L4 listener."),
    ("l4_open_connections", "gauge", "open", "Connections open on an L4 listener."),
    (
        "l4_received_bytes_total",
        "counter",
        "bytes_in",
        "Bytes received from clients of an L4 listener (sent upstream).",
    ),
    (
        "l4_sent_bytes_total",
        "counter",
        "bytes_out",
        "Bytes sent to clients of an L4 listener (received from upstream).",
    ),
    (
        "l4_connect_failures_total",
        "counter",
        "connect_failures",
        "Upstream connection attempts of an L4 listener that failed (or found no target).",
    ),
)
