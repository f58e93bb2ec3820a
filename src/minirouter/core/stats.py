"""Per-second, per-route counters for the GUI's live charts (store mode only).

The request path only bumps numbers in a dict; once a second the mirror takes the
finished second and publishes it to the store off the event loop.
"""

from __future__ import annotations

import time

# Latency samples kept per route and second: enough for a p99 at the rates one
# worker serves, bounded whatever the rate.
MAX_SAMPLES = 4096


class _RouteSecond:
    __slots__ = ("bytes", "durations", "requests", "status")

    def __init__(self) -> None:
        self.requests = 0
        self.status = [0, 0, 0, 0, 0]  # 1xx..5xx
        self.bytes = 0
        self.durations: list[float] = []


class StatsWindow:
    def __init__(self) -> None:
        self.second = int(time.time())
        self.current: dict[str, _RouteSecond] = {}
        self.done: dict[int, dict[str, _RouteSecond]] = {}

    def record(self, route: str, status: int, duration: float, nbytes: int) -> None:
        now = int(time.time())
        if now != self.second:
            self._rotate(now)
        entry = self.current.get(route)
        if entry is None:
            entry = self.current[route] = _RouteSecond()
        entry.requests += 1
        cls = status // 100
        if 1 <= cls <= 5:
            entry.status[cls - 1] += 1
        entry.bytes += nbytes
        if len(entry.durations) < MAX_SAMPLES:
            entry.durations.append(duration)

    def _rotate(self, now: int) -> None:
        if self.current:
            self.done[self.second] = self.current
            # Seconds nobody took (store down) are dropped, not kept forever.
            for old in [s for s in self.done if s < now - 10]:
                del self.done[old]
        self.current = {}
        self.second = now

    def take_finished(self) -> list[tuple[int, dict[str, dict[str, float]]]]:
        """Every finished second not taken yet, oldest first (route -> name -> value), once.

        All of them, not just the last one: a publisher that wakes late (a busy loop, a slow
        store call) must not skip the seconds in between.
        """
        now = int(time.time())
        if self.second < now:
            self._rotate(now)
        taken = [(second, self.done.pop(second)) for second in sorted(self.done)]
        return [(second, _summary(routes)) for second, routes in taken]


def _summary(routes: dict[str, _RouteSecond]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for route, e in routes.items():
        durations = sorted(e.durations)
        n = len(durations)
        out[route or "-"] = {
            "requests": e.requests,
            "1xx": e.status[0],
            "2xx": e.status[1],
            "3xx": e.status[2],
            "4xx": e.status[3],
            "5xx": e.status[4],
            "bytes": e.bytes,
            "p50": durations[n // 2] if n else 0.0,
            "p99": durations[min(n - 1, (n * 99) // 100)] if n else 0.0,
        }
    return out
