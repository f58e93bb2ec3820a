"""Target state (health, in-flight count, passive ejection) and the balancing policies.

A `Balancer` belongs to one revision of one `Upstream` and its policy tables are never changed
after construction; a reload builds the next one with `updated()`, which carries the `TargetState`
of every address that is still configured. A request that already picked a target keeps using the
state object it got, so nothing is lost (in-flight counts, the idle pool, failures) when the config
changes under it.

`pick()` runs once per request (twice on a retry), so the common path does no allocation and no
scan: round robin and weighted follow a precomputed schedule, hash bisects a precomputed ring. Only
when the scheduled target cannot be used (unhealthy, ejected, excluded) does a policy fall back to
a scan over the targets.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from minirouter.model import Passive, Target, Upstream

__all__ = ["Balancer", "TargetState"]

# A weighted schedule longer than this is not precomputed (weights like 997:1000 would need
# thousands of slots); the live smooth weighted round robin is used instead, at O(n) per pick.
_SCHEDULE_LIMIT = 4096

# Virtual nodes on the hash ring per unit of weight. 160 per target (ketama's figure) keeps the
# share of each target within a few percent of its weight.
_RING_POINTS_PER_WEIGHT = 160
# Upper bound of the ring size so that huge weights cannot make a reload slow or memory hungry.
_RING_MAX_POINTS = 100_000
# Ring steps taken before checking whether any target can be used at all: with every target down
# a blind walk would visit the whole ring on every request, exactly during an outage.
_RING_WALK_BEFORE_SCAN = 32


class TargetState:
    """The live state of one target address, shared by every Balancer revision that lists it."""

    __slots__ = (
        "_fails",
        "_probation",
        "_window_start",
        "address",
        "address_b",
        "ejected_until",
        "healthy",
        "host",
        "idle",
        "inflight",
        "passive",
        "port",
        "target",
        "weight",
    )

    def __init__(self, target: Target, passive: Passive | None = None) -> None:
        self.target = target
        self.address = target.address
        self.address_b = target.address.encode("latin-1")  # the Host sent upstream
        self.host = target.host
        self.port = target.port
        # Validation rejects weights below 1; the clamp only keeps the policy arithmetic safe.
        self.weight = max(1, target.weight)
        self.inflight = 0
        # Pooled idle upstream connections: owned by core/upstream.py, only carried along here.
        self.idle: collections.deque[Any] = collections.deque()
        self.healthy = True  # set by the active health checker
        self.passive = passive if passive is not None else Passive()
        # Monotonic time until which the target is passively ejected (0.0: never was).
        self.ejected_until = 0.0
        self._fails = 0
        self._window_start = 0.0
        # Set by an ejection and cleared by a success: the first request after an ejection is a
        # trial, and if it fails the target goes straight back out (as nginx does), instead of
        # taking another max_fails failed client requests to notice it is still broken.
        self._probation = False

    def __repr__(self) -> str:
        return (
            f"<TargetState {self.address} w={self.weight} inflight={self.inflight}"
            f" healthy={self.healthy} ejected_until={self.ejected_until}>"
        )

    def available(self, now: float) -> bool:
        """Healthy (active checks) and not passively ejected at monotonic time `now`."""
        return self.healthy and now >= self.ejected_until

    @property
    def failures(self) -> int:
        """Failures counted in the current passive window (for tests and diagnostics)."""
        return self._fails

    def begin(self) -> None:
        self.inflight += 1

    def end(self) -> None:
        # Never negative: a state carried across a reload must not be driven below zero by an
        # unbalanced end() and then be favoured by least_conn forever.
        if self.inflight > 0:
            self.inflight -= 1

    def record_failure(self, now: float) -> None:
        """A request to this target failed (connect error, reset, timeout, invalid answer)."""
        passive = self.passive
        if passive.max_fails <= 0:
            return
        if self._probation:
            self._eject(now)
            return
        if self._fails == 0 or now - self._window_start > passive.fail_timeout:
            # Failures older than fail_timeout do not count: start a new window.
            self._fails = 0
            self._window_start = now
        self._fails += 1
        if self._fails >= passive.max_fails:
            self._eject(now)

    def record_success(self) -> None:
        self._fails = 0
        self._probation = False

    def _eject(self, now: float) -> None:
        self.ejected_until = now + self.passive.fail_timeout
        self._fails = 0
        self._probation = True

    def _reconfigure(self, target: Target, upstream: Upstream) -> None:
        """Take the settings of a new revision while keeping the live state."""
        self.target = target
        self.weight = max(1, target.weight)
        self.passive = upstream.passive
        if upstream.health is None:
            # Nobody would ever mark it healthy again.
            self.healthy = True
        if upstream.passive.max_fails <= 0:
            self.ejected_until = 0.0
            self._fails = 0
            self._probation = False


def _swrr_schedule(weights: Sequence[int]) -> list[int]:
    """One period of nginx's smooth weighted round robin, as target indexes."""
    total = sum(weights)
    current = [0] * len(weights)
    order: list[int] = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            # Strictly greater: on a tie the earlier target wins, as in nginx.
            if current[i] > current[best]:
                best = i
        current[best] -= total
        order.append(best)
    return order


def _hash64(data: str) -> int:
    # A process-independent hash: Python's hash() of a str is salted per process, and every
    # worker (and every router host) must send a given key to the same target.
    digest = hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# Request keys repeat (a client sends many requests), and a dict hit costs a tenth of blake2b.
# Cleared when full rather than LRU-evicted: cheap, and memory stays bounded whatever keys
# clients send (str keys use Python's salted hash, so they cannot be chosen to collide).
_KEY_CACHE: dict[str, int] = {}
_KEY_CACHE_SIZE = 8192


def _key_hash(key: str) -> int:
    h = _KEY_CACHE.get(key)
    if h is None:
        if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
            _KEY_CACHE.clear()
        h = _KEY_CACHE[key] = _hash64(key)
    return h


# A policy, stored unbound: a bound method kept on the instance would make every Balancer a
# reference cycle that only the cyclic GC can free after a reload.
_PickFn = Callable[
    ["Balancer", str, Mapping[str, str] | None, Collection[TargetState]], TargetState | None
]


class Balancer:
    """Chooses a target of one upstream revision for each request."""

    __slots__ = (
        "_current",
        "_cursor",
        "_hash_header",
        "_now",
        "_pick",
        "_ring_owners",
        "_ring_points",
        "_schedule",
        "policy",
        "targets",
        "upstream",
    )

    def __init__(
        self,
        upstream: Upstream,
        now: Callable[[], float] = time.monotonic,
        *,
        _states: list[TargetState] | None = None,
    ) -> None:
        self.upstream = upstream
        self._now = now
        self.targets: list[TargetState] = (
            _states
            if _states is not None
            else [TargetState(t, upstream.passive) for t in upstream.targets]
        )
        targets = self.targets
        policy: str = upstream.balance
        if policy == "round_robin" and any(st.weight != 1 for st in targets):
            policy = "weighted"
        # The effective policy: "round_robin", "weighted", "least_conn" or "hash".
        self.policy = policy
        self._cursor = 0
        # Live smooth-weighted-round-robin state, used when the schedule's slot is unusable.
        self._current = [0] * len(targets)
        self._schedule: list[int] | None = None
        self._ring_points: list[int] = []
        self._ring_owners: list[int] = []
        self._hash_header: str | None = None
        self._pick: _PickFn

        if policy == "least_conn":
            self._pick = Balancer._pick_least_conn
        elif policy == "hash":
            self._build_ring()
            if upstream.hash_on.lower().startswith("header:"):
                self._hash_header = upstream.hash_on[len("header:") :].strip().lower() or None
            self._pick = Balancer._pick_hash
        else:
            if targets:
                weights = [st.weight for st in targets]
                g = math.gcd(*weights)
                reduced = [w // g for w in weights]
                if sum(reduced) <= _SCHEDULE_LIMIT:
                    self._schedule = _swrr_schedule(reduced)
            self._pick = Balancer._pick_scheduled

    def __repr__(self) -> str:
        return f"<Balancer {self.upstream.id} {self.policy} targets={len(self.targets)}>"

    # -- public ----------------------------------------------------------------

    def pick(
        self,
        client_ip: str,
        headers: Mapping[str, str] | None = None,
        exclude: Collection[TargetState] = (),
    ) -> TargetState | None:
        """The target for this request, never one in `exclude`; None if no target is usable."""
        return self._pick(self, client_ip, headers, exclude)

    def updated(self, upstream: Upstream) -> tuple[Balancer, list[TargetState]]:
        """A Balancer for a new revision of the upstream, and the states that left it.

        States of addresses still present are reused (health, in-flight count, idle pool, passive
        failures); the caller closes the idle pools of the removed ones.
        """
        old: dict[str, TargetState] = {}
        removed: list[TargetState] = []
        for st in self.targets:
            if st.address in old:
                removed.append(st)  # a duplicate address: keep one state, release the other
            else:
                old[st.address] = st
        states: list[TargetState] = []
        for target in upstream.targets:
            st_or_none = old.pop(target.address, None)
            if st_or_none is None:
                states.append(TargetState(target, upstream.passive))
            else:
                st_or_none._reconfigure(target, upstream)
                states.append(st_or_none)
        removed.extend(old.values())
        return Balancer(upstream, self._now, _states=states), removed

    # -- policies --------------------------------------------------------------

    def _pick_scheduled(
        self,
        client_ip: str,
        headers: Mapping[str, str] | None,
        exclude: Collection[TargetState],
    ) -> TargetState | None:
        schedule = self._schedule
        if schedule is not None:
            cursor = self._cursor
            st = self.targets[schedule[cursor]]
            cursor += 1
            self._cursor = 0 if cursor == len(schedule) else cursor
            if st.healthy and not (exclude and st in exclude):
                until = st.ejected_until
                # A target never ejected needs no clock reading.
                if not until or until <= self._now():
                    return st
        now = self._now()
        # The slot's target is unusable (or there is no schedule): hand the slot to the live
        # smooth weighted round robin over the usable targets. That keeps the shares of the
        # others proportional to their weights; simply taking the next target in the list would
        # give the whole share of a dead target to its neighbour.
        return self._swrr(now, exclude)

    def _swrr(self, now: float, exclude: Collection[TargetState]) -> TargetState | None:
        current = self._current
        total = 0
        best = -1
        for i, st in enumerate(self.targets):
            if not st.healthy or st.ejected_until > now or (exclude and st in exclude):
                continue
            current[i] += st.weight
            total += st.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self.targets[best]

    def _pick_least_conn(
        self,
        client_ip: str,
        headers: Mapping[str, str] | None,
        exclude: Collection[TargetState],
    ) -> TargetState | None:
        now = self._now()
        targets = self.targets
        n = len(targets)
        start = self._cursor
        best: TargetState | None = None
        best_i = 0
        for k in range(n):
            i = start + k
            if i >= n:
                i -= n
            st = targets[i]
            if not st.healthy or st.ejected_until > now or (exclude and st in exclude):
                continue
            # inflight/weight compared without division. Strictly smaller: among equals the first
            # one from the rotating start wins, so ties go round robin instead of always to the
            # first target in the list.
            if best is None or st.inflight * best.weight < best.inflight * st.weight:
                best = st
                best_i = i
        if best is None:
            return None
        self._cursor = best_i + 1 if best_i + 1 < n else 0
        return best

    def _build_ring(self) -> None:
        targets = self.targets
        total_weight = sum(st.weight for st in targets)
        per_weight = _RING_POINTS_PER_WEIGHT
        if total_weight * per_weight > _RING_MAX_POINTS:
            per_weight = max(1, _RING_MAX_POINTS // max(1, total_weight))
        # Point positions depend only on the address and the point number, so every worker and
        # every revision places a target's points at the same spots: removing a target takes only
        # its own points away and moves only its own keys.
        points: list[tuple[int, str, int]] = []
        for i, st in enumerate(targets):
            for j in range(st.weight * per_weight):
                points.append((_hash64(f"{st.address}#{j}"), st.address, i))
        points.sort()
        self._ring_points = [p[0] for p in points]
        self._ring_owners = [p[2] for p in points]

    def _pick_hash(
        self,
        client_ip: str,
        headers: Mapping[str, str] | None,
        exclude: Collection[TargetState],
    ) -> TargetState | None:
        points = self._ring_points
        m = len(points)
        if m == 0:
            return None
        key = client_ip
        name = self._hash_header
        if name is not None and headers is not None:
            value = headers.get(name)
            if value:
                key = value
        now = self._now()
        targets = self.targets
        owners = self._ring_owners
        idx = bisect.bisect_right(points, _key_hash(key))
        # Walk clockwise to the first usable target: deterministic, and a key whose own target is
        # usable never moves because some other target is down.
        for step in range(m):
            if idx == m:
                idx = 0
            st = targets[owners[idx]]
            if st.healthy and st.ejected_until <= now and not (exclude and st in exclude):
                return st
            idx += 1
            if step == _RING_WALK_BEFORE_SCAN and not any(
                t.healthy and t.ejected_until <= now and not (exclude and t in exclude)
                for t in targets
            ):
                return None
        return None
