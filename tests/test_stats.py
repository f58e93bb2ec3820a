"""StatsWindow: per-second, per-route counters taken once by the publisher."""

from __future__ import annotations

import pytest

from minirouter.core import stats as stats_mod
from minirouter.core.stats import StatsWindow


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_finished_second_is_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1000.2)
    monkeypatch.setattr(stats_mod.time, "time", clock)
    window = StatsWindow()
    for i in range(100):
        window.record("api", 200 if i < 90 else 503, (i + 1) / 1000, 10)
    window.record("", 404, 0.0005, 5)
    clock.now = 1001.1
    window.record("api", 200, 0.001, 10)  # belongs to the next second
    second, counters = window.take(1000)
    assert second == 1000
    api = counters["api"]
    assert api["requests"] == 100
    assert (api["2xx"], api["5xx"], api["4xx"]) == (90, 10, 0)
    assert api["bytes"] == 1000
    assert api["p50"] == pytest.approx(0.051)
    assert api["p99"] == pytest.approx(0.100)
    assert counters["-"]["4xx"] == 1
    assert window.take(1000) == (1000, {})
    clock.now = 1002.0
    assert window.take(1001)[1]["api"]["requests"] == 1


def test_seconds_nobody_takes_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(2000.0)
    monkeypatch.setattr(stats_mod.time, "time", clock)
    window = StatsWindow()
    for s in range(30):
        clock.now = 2000.0 + s
        window.record("r", 200, 0.001, 1)
    assert len(window.done) <= 11
    assert window.take(2000) == (2000, {})


def test_latency_samples_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod.time, "time", Clock(3000.5))
    window = StatsWindow()
    for _ in range(stats_mod.MAX_SAMPLES + 500):
        window.record("r", 200, 0.001, 1)
    assert len(window.current["r"].durations) == stats_mod.MAX_SAMPLES
    assert window.current["r"].requests == stats_mod.MAX_SAMPLES + 500
