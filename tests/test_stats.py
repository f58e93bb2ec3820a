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
    [(second, counters)] = window.take_finished()
    assert second == 1000
    api = counters["api"]
    assert api["requests"] == 100
    assert (api["2xx"], api["5xx"], api["4xx"]) == (90, 10, 0)
    assert api["bytes"] == 1000
    assert api["p50"] == pytest.approx(0.051)
    assert api["p99"] == pytest.approx(0.100)
    assert counters["-"]["4xx"] == 1
    assert window.take_finished() == []  # taken once; 1001 is not finished yet
    clock.now = 1002.0
    [(second, counters)] = window.take_finished()
    assert (second, counters["api"]["requests"]) == (1001, 1)


def test_a_late_publisher_gets_every_finished_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1500.5)
    monkeypatch.setattr(stats_mod.time, "time", clock)
    window = StatsWindow()
    for s in range(3):  # one request in each of 1500, 1501, 1502
        clock.now = 1500.5 + s
        window.record("api", 200, 0.001, 1)
    clock.now = 1504.2  # the publisher slept through 1503
    taken = window.take_finished()
    assert [(second, c["api"]["requests"]) for second, c in taken] == [
        (1500, 1),
        (1501, 1),
        (1502, 1),
    ]
    assert window.take_finished() == []


def test_seconds_nobody_takes_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(2000.0)
    monkeypatch.setattr(stats_mod.time, "time", clock)
    window = StatsWindow()
    for s in range(30):
        clock.now = 2000.0 + s
        window.record("r", 200, 0.001, 1)
    assert len(window.done) <= 11
    assert 2000 not in [second for second, _ in window.take_finished()]


def test_latency_samples_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod.time, "time", Clock(3000.5))
    window = StatsWindow()
    for _ in range(stats_mod.MAX_SAMPLES + 500):
        window.record("r", 200, 0.001, 1)
    assert len(window.current["r"].durations) == stats_mod.MAX_SAMPLES
    assert window.current["r"].requests == stats_mod.MAX_SAMPLES + 500
