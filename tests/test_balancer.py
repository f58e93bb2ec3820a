"""Balancing policies, exclusion, passive ejection and reload behaviour of core.balancer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirouter.core.balancer import Balancer, TargetState
from minirouter.model import HealthCheck, Passive, Target, Upstream


class Clock:
    """An injectable monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def upstream(*targets: str | tuple[str, int], **kw: object) -> Upstream:
    ts = tuple(Target(t) if isinstance(t, str) else Target(t[0], t[1]) for t in targets)
    return Upstream(id="api", targets=ts, **kw)  # type: ignore[arg-type]


A, B, C, D = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"


def picks(b: Balancer, n: int, ip: str = "1.2.3.4") -> list[str]:
    out = []
    for _ in range(n):
        st_ = b.pick(ip)
        assert st_ is not None
        out.append(st_.address)
    return out


def state(b: Balancer, address: str) -> TargetState:
    return next(s for s in b.targets if s.address == address)


# -- round robin and weighted ---------------------------------------------------


def test_round_robin_exact_cycle() -> None:
    b = Balancer(upstream(A, B, C))
    assert b.policy == "round_robin"
    assert picks(b, 9) == [A, B, C] * 3


def test_weights_imply_weighted() -> None:
    b = Balancer(upstream(A, (B, 3)))
    assert b.policy == "weighted"


def test_weighted_one_to_three_shares_and_smooth_order() -> None:
    b = Balancer(upstream(A, (B, 3)))
    seq = picks(b, 400)
    counts = Counter(seq)
    assert counts[A] == 100
    assert counts[B] == 300
    # Smooth: the light target is never picked twice in a row, and every window of 4 holds it once.
    assert seq[:4] == [B, A, B, B]
    for i in range(0, 400, 4):
        assert seq[i : i + 4].count(A) == 1


def test_weighted_matches_nginx_smooth_sequence() -> None:
    # The example from nginx's commit introducing smooth weighted round robin.
    b = Balancer(upstream((A, 5), (B, 1), (C, 1)))
    assert picks(b, 7) == [A, A, B, A, C, A, A]


def test_weighted_large_weights_without_schedule() -> None:
    # 9973:10007 is too long a period to precompute: the live algorithm must be just as exact.
    b = Balancer(upstream((A, 9973), (B, 10007)))
    counts = Counter(picks(b, 9973 + 10007))
    assert counts == {A: 9973, B: 10007}


def test_round_robin_skips_down_target_without_favouring_its_neighbour() -> None:
    b = Balancer(upstream(A, B, C))
    state(b, B).healthy = False
    counts = Counter(picks(b, 300))
    assert B not in counts
    assert counts[A] == counts[C] == 150


def test_weighted_shares_stay_proportional_with_a_target_down() -> None:
    b = Balancer(upstream((A, 1), (B, 2), (C, 3)))
    state(b, C).healthy = False
    counts = Counter(picks(b, 600))
    assert C not in counts
    assert counts[B] == pytest.approx(2 * counts[A], abs=2)


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6))
def test_weighted_period_matches_weights(weights: list[int]) -> None:
    addrs = [f"10.1.0.{i + 1}:80" for i in range(len(weights))]
    b = Balancer(upstream(*zip(addrs, weights, strict=True)))
    counts = Counter(picks(b, sum(weights) * 2))
    assert counts == {a: 2 * w for a, w in zip(addrs, weights, strict=True)}


# -- least_conn -----------------------------------------------------------------


def test_least_conn_prefers_idle_targets() -> None:
    b = Balancer(upstream(A, B, C, balance="least_conn"))
    state(b, A).begin()
    state(b, A).begin()
    state(b, B).begin()
    for _ in range(5):
        chosen = b.pick("1.2.3.4")
        assert chosen is not None and chosen.address == C
    # Once C carries as much as B, B and C share (A still has the most).
    state(b, C).begin()
    got = set(picks(b, 4))
    assert got == {B, C}


def test_least_conn_ties_spread_round_robin() -> None:
    b = Balancer(upstream(A, B, C, balance="least_conn"))
    assert sorted(picks(b, 3)) == [A, B, C]
    assert Counter(picks(b, 300)) == {A: 100, B: 100, C: 100}


def test_least_conn_with_begin_end_spreads_load() -> None:
    b = Balancer(upstream(A, B, balance="least_conn"))
    held = []
    for _ in range(10):
        s = b.pick("1.2.3.4")
        assert s is not None
        s.begin()
        held.append(s)
    assert state(b, A).inflight == state(b, B).inflight == 5
    for s in held:
        s.end()
    assert state(b, A).inflight == state(b, B).inflight == 0
    state(b, A).end()  # an unbalanced end() never drives the count negative
    assert state(b, A).inflight == 0


def test_least_conn_relative_to_weight() -> None:
    b = Balancer(upstream((A, 3), (B, 1), balance="least_conn"))
    for _ in range(2):
        state(b, A).begin()
    state(b, B).begin()
    # A: 2/3 in flight per weight, B: 1/1.
    chosen = b.pick("1.2.3.4")
    assert chosen is not None and chosen.address == A


# -- hash -----------------------------------------------------------------------


def keys(n: int) -> list[str]:
    return [f"192.168.{i // 250}.{i % 250}" for i in range(n)]


def mapping(b: Balancer, ks: list[str]) -> dict[str, str]:
    out = {}
    for k in ks:
        s = b.pick(k)
        assert s is not None
        out[k] = s.address
    return out


def test_hash_is_stable_and_spreads() -> None:
    b = Balancer(upstream(A, B, C, balance="hash"))
    ks = keys(3000)
    first = mapping(b, ks)
    assert mapping(b, ks) == first
    counts = Counter(first.values())
    assert set(counts) == {A, B, C}
    for n in counts.values():
        assert 700 < n < 1300


def test_hash_is_independent_of_target_order_and_instance() -> None:
    ks = keys(500)
    one = mapping(Balancer(upstream(A, B, C, balance="hash")), ks)
    two = mapping(Balancer(upstream(C, A, B, balance="hash")), ks)
    assert one == two


def test_hash_ejection_moves_only_the_ejected_targets_keys() -> None:
    clock = Clock()
    b = Balancer(upstream(A, B, C, D, balance="hash", passive=Passive(1, 10.0)), now=clock)
    ks = keys(2000)
    before = mapping(b, ks)
    state(b, B).record_failure(clock.t)
    during = mapping(b, ks)
    for k in ks:
        if before[k] == B:
            assert during[k] != B
        else:
            assert during[k] == before[k]
    moved_to = Counter(during[k] for k in ks if before[k] == B)
    assert len(moved_to) >= 2  # B's keys spread over the others, not all onto one neighbour
    clock.t += 10.0
    assert mapping(b, ks) == before


def test_hash_removal_and_addition_move_only_affected_keys() -> None:
    b = Balancer(upstream(A, B, C, D, balance="hash"))
    ks = keys(2000)
    before = mapping(b, ks)
    smaller, removed = b.updated(upstream(A, C, D, balance="hash"))
    assert [s.address for s in removed] == [B]
    after = mapping(smaller, ks)
    assert all(after[k] == before[k] for k in ks if before[k] != B)
    bigger, removed = smaller.updated(upstream(A, C, D, "10.0.0.5:80", balance="hash"))
    assert removed == []
    grown = mapping(bigger, ks)
    assert all(grown[k] in (after[k], "10.0.0.5:80") for k in ks)
    assert any(grown[k] == "10.0.0.5:80" for k in ks)


def test_hash_on_header_with_fallback_to_client_ip() -> None:
    by_header = Balancer(upstream(A, B, C, balance="hash", hash_on="header:X-User-Id"))
    by_ip = Balancer(upstream(A, B, C, balance="hash"))
    users = [f"user-{i}" for i in range(200)]
    per_user = {}
    for u in users:
        seen = {by_header.pick(ip, {"x-user-id": u}) for ip in ("1.1.1.1", "2.2.2.2", "3.3.3.3")}
        assert len(seen) == 1  # the client address does not matter, the header does
        per_user[u] = seen.pop()
    assert len({s.address for s in per_user.values() if s is not None}) == 3
    for ip in keys(100):
        no_header = by_header.pick(ip, {"other": "x"})
        assert no_header is not None
        ip_pick = by_ip.pick(ip)
        assert ip_pick is not None
        assert no_header.address == ip_pick.address
        assert by_header.pick(ip, None) is no_header


def test_hash_all_down_returns_none() -> None:
    b = Balancer(upstream(A, B, C, balance="hash"))
    for s in b.targets:
        s.healthy = False
    assert b.pick("1.2.3.4") is None
    state(b, C).healthy = True
    assert all(b.pick(k) is state(b, C) for k in keys(50))


# -- exclusion and availability ------------------------------------------------------


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "hash"])
def test_exclude_is_never_returned(balance: str) -> None:
    b = Balancer(upstream(A, B, C, balance=balance))
    for k in keys(100):
        first = b.pick(k)
        assert first is not None
        second = b.pick(k, exclude=(first,))
        assert second is not None and second is not first
        third = b.pick(k, exclude={first, second})
        assert third is not None and third not in (first, second)
        assert b.pick(k, exclude=b.targets) is None


def test_weighted_exclude() -> None:
    b = Balancer(upstream((A, 5), (B, 1)))
    a = state(b, A)
    assert set(picks_excluding(b, 20, a)) == {B}


def picks_excluding(b: Balancer, n: int, ex: TargetState) -> list[str]:
    out = []
    for _ in range(n):
        s = b.pick("1.2.3.4", exclude=(ex,))
        assert s is not None
        out.append(s.address)
    return out


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "hash"])
def test_no_available_target_gives_none(balance: str) -> None:
    b = Balancer(upstream(A, B, balance=balance))
    for s in b.targets:
        s.healthy = False
    assert b.pick("1.2.3.4") is None
    state(b, B).healthy = True
    assert {b.pick(k) for k in keys(20)} == {state(b, B)}


# -- passive ejection ---------------------------------------------------------------


def test_passive_ejection_and_recovery() -> None:
    clock = Clock()
    b = Balancer(upstream(A, B, passive=Passive(max_fails=3, fail_timeout=10.0)), now=clock)
    a = state(b, A)
    a.record_failure(clock.t)
    a.record_failure(clock.t + 1)
    assert a.available(clock.t + 1)
    a.record_failure(clock.t + 2)  # third failure within 10 s: ejected until t+12
    assert not a.available(clock.t + 2)
    clock.t += 5
    assert set(picks(b, 10)) == {B}
    assert not a.available(clock.t + 6.99)
    clock.t += 7.0  # t+12
    assert a.available(clock.t)
    assert set(picks(b, 10)) == {A, B}


def test_passive_first_failure_after_ejection_ejects_again() -> None:
    clock = Clock()
    a = TargetState(Target(A), Passive(max_fails=3, fail_timeout=10.0))
    for _ in range(3):
        a.record_failure(clock.t)
    clock.t += 10
    assert a.available(clock.t)
    a.record_failure(clock.t)  # the trial request failed: straight back out
    assert not a.available(clock.t)
    clock.t += 10
    a.record_success()  # the next trial works: back to needing max_fails failures
    a.record_failure(clock.t)
    a.record_failure(clock.t)
    assert a.available(clock.t)


def test_passive_failures_outside_the_window_do_not_add_up() -> None:
    a = TargetState(Target(A), Passive(max_fails=3, fail_timeout=10.0))
    a.record_failure(0.0)
    a.record_failure(5.0)
    a.record_failure(10.5)  # the window that began at 0 has closed: this starts a new one
    assert a.available(10.5)
    assert a.failures == 1


def test_record_success_resets_the_count() -> None:
    a = TargetState(Target(A), Passive(max_fails=2, fail_timeout=10.0))
    a.record_failure(0.0)
    a.record_success()
    a.record_failure(1.0)
    assert a.available(1.0)
    a.record_failure(2.0)
    assert not a.available(2.0)


def test_max_fails_zero_disables_passive_ejection() -> None:
    a = TargetState(Target(A), Passive(max_fails=0, fail_timeout=10.0))
    for i in range(100):
        a.record_failure(float(i) / 100)
    assert a.available(1.0)


def test_health_flag_makes_target_unavailable() -> None:
    a = TargetState(Target(A))
    assert a.healthy and a.available(0.0)
    a.healthy = False
    assert not a.available(0.0)


# -- reload ---------------------------------------------------------------------------


def test_updated_keeps_state_of_remaining_targets() -> None:
    clock = Clock()
    old = Balancer(
        upstream(A, B, C, passive=Passive(1, 30.0), health=HealthCheck(interval=1.0)), now=clock
    )
    a, b, c = (state(old, x) for x in (A, B, C))
    a.begin()
    a.idle.append("conn-1")
    b.healthy = False
    c.record_failure(clock.t)
    assert not c.available(clock.t)

    new, removed = old.updated(
        upstream((A, 2), C, D, passive=Passive(1, 30.0), health=HealthCheck(interval=1.0))
    )
    assert removed == [b]
    assert state(new, A) is a and state(new, C) is c
    assert a.inflight == 1 and list(a.idle) == ["conn-1"]
    assert a.weight == 2 and a.target == Target(A, 2)
    assert not c.available(clock.t)  # still ejected
    d = state(new, D)
    assert d.inflight == 0 and d.healthy and len(d.idle) == 0
    assert new.policy == "weighted"
    assert old.targets == [a, b, c]  # the old revision is untouched for requests still using it


def test_updated_without_health_check_marks_targets_healthy() -> None:
    old = Balancer(upstream(A, B, health=HealthCheck()))
    state(old, A).healthy = False
    new, _ = old.updated(upstream(A, B))
    assert state(new, A).healthy


def test_updated_can_change_policy_and_passive_settings() -> None:
    clock = Clock()
    old = Balancer(upstream(A, B, passive=Passive(1, 10.0)), now=clock)
    state(old, A).record_failure(clock.t)
    new, _ = old.updated(upstream(A, B, balance="hash", passive=Passive(0, 10.0)))
    assert new.policy == "hash"
    assert state(new, A).available(clock.t)  # passive ejection switched off: back in


def test_hash_respects_weights() -> None:
    b = Balancer(upstream((A, 1), (B, 3), balance="hash"))
    counts = Counter(mapping(b, keys(4000)).values())
    assert 0.18 < counts[A] / 4000 < 0.32
    assert 0.68 < counts[B] / 4000 < 0.82


def test_hash_is_the_same_in_every_process() -> None:
    # Workers are separate processes with their own str-hash salt; a key must still land on the
    # same target in each of them.
    code = (
        "from minirouter.core.balancer import Balancer\n"
        "from minirouter.model import Target, Upstream\n"
        f"b = Balancer(Upstream(id='api', targets=tuple(Target(a) for a in {[A, B, C, D]!r}),"
        " balance='hash'))\n"
        "print(','.join(b.pick(f'10.9.{i}.1').address for i in range(200)))\n"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout)
    assert len(outputs) == 1
    in_process = Balancer(upstream(A, B, C, D, balance="hash"))
    expected = ",".join(
        s.address for s in (in_process.pick(f"10.9.{i}.1") for i in range(200)) if s
    )
    assert outputs == {expected + "\n"}
