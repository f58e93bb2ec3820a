"""core.metrics: recording and the Prometheus text exposition, parsed back line by line."""

from __future__ import annotations

import math
import re

import pytest

from minirouter.core.metrics import CONTENT_TYPE, DEFAULT_BUCKETS, Metrics, escape_label

Sample = tuple[str, tuple[tuple[str, str], ...]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: bytes) -> tuple[dict[str, str], dict[str, str], dict[Sample, float]]:
    """(TYPE by family, HELP by family, value by (name, sorted labels)); strict about syntax."""
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    samples: dict[Sample, float] = {}
    decoded = text.decode("utf-8")
    assert decoded.endswith("\n")
    for line in decoded.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram")
            assert name not in types
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw_labels, value = m.groups()
        labels: list[tuple[str, str]] = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} before its # TYPE"
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, helps, samples


def test_empty_render_is_valid_and_has_every_family() -> None:
    types, helps, samples = parse(Metrics().render())
    expected = {
        "minirouter_requests_total": "counter",
        "minirouter_request_duration_seconds": "histogram",
        "minirouter_upstream_latency_seconds": "histogram",
        "minirouter_bytes_received_total": "counter",
        "minirouter_bytes_sent_total": "counter",
        "minirouter_open_connections": "gauge",
        "minirouter_connections_refused_total": "counter",
        "minirouter_connections_evicted_total": "counter",
        "minirouter_config_revision": "gauge",
        "minirouter_config_reloads_total": "counter",
        "minirouter_upstream_target_up": "gauge",
        "minirouter_upstream_failures_total": "counter",
    }
    assert types == expected
    assert set(helps) == set(expected)
    assert samples[("minirouter_config_reloads_total", (("result", "ok"),))] == 0
    assert samples[("minirouter_config_reloads_total", (("result", "error"),))] == 0
    assert samples[("minirouter_open_connections", ())] == 0
    assert samples[("minirouter_connections_refused_total", ())] == 0
    assert samples[("minirouter_connections_evicted_total", ())] == 0
    assert "minirouter_store_behind" not in types  # store mode only
    assert "version=0.0.4" in CONTENT_TYPE


def test_requests_counters_and_bytes() -> None:
    m = Metrics()
    m.request_done("api", 200, 0.01, 100, 2000)
    m.request_done("api", 200, 0.02, 50, 1000)
    m.request_done("api", 502, 0.5, 10, 20)
    m.request_done("", 404, 0.0001, 1, 2)
    _, _, s = parse(m.render())
    assert s[("minirouter_requests_total", (("route", "api"), ("status", "200")))] == 2
    assert s[("minirouter_requests_total", (("route", "api"), ("status", "502")))] == 1
    assert s[("minirouter_requests_total", (("route", ""), ("status", "404")))] == 1
    assert s[("minirouter_bytes_received_total", ())] == 161
    assert s[("minirouter_bytes_sent_total", ())] == 3022


def test_histogram_buckets_are_cumulative() -> None:
    m = Metrics()
    values = [0.001, 0.005, 0.007, 0.3, 0.3, 2.0, 99.0]
    for v in values:
        m.request_done("r", 200, v, 0, 0)
    _, _, s = parse(m.render())
    name = "minirouter_request_duration_seconds"
    bounds = [*DEFAULT_BUCKETS, math.inf]
    previous = 0.0
    for bound in bounds:
        le = "+Inf" if bound == math.inf else repr(bound)
        count = s[(f"{name}_bucket", (("le", le), ("route", "r")))]
        assert count == sum(1 for v in values if v <= bound)  # le is inclusive
        assert count >= previous
        previous = count
    assert s[(f"{name}_bucket", (("le", "0.005"), ("route", "r")))] == 2
    assert s[(f"{name}_count", (("route", "r"),))] == len(values)
    assert s[(f"{name}_sum", (("route", "r"),))] == pytest.approx(sum(values))


def test_upstream_latency_failures_and_target_up() -> None:
    m = Metrics()
    m.upstream_response("pool", 0.02)
    m.upstream_response("pool", 0.2)
    m.upstream_failure("pool", "10.0.0.1:80")
    m.upstream_failure("pool", "10.0.0.1:80")
    m.set_target_up("pool", "10.0.0.1:80", False)
    m.set_target_up("pool", "10.0.0.2:80", True)
    _, _, s = parse(m.render())
    lat = "minirouter_upstream_latency_seconds"
    assert s[(f"{lat}_count", (("upstream", "pool"),))] == 2
    assert s[(f"{lat}_bucket", (("le", "0.025"), ("upstream", "pool")))] == 1
    assert s[(f"{lat}_bucket", (("le", "0.25"), ("upstream", "pool")))] == 2
    t1 = (("target", "10.0.0.1:80"), ("upstream", "pool"))
    t2 = (("target", "10.0.0.2:80"), ("upstream", "pool"))
    assert s[("minirouter_upstream_failures_total", t1)] == 2
    assert s[("minirouter_upstream_target_up", t1)] == 0
    assert s[("minirouter_upstream_target_up", t2)] == 1
    m.forget_target("pool", "10.0.0.1:80")
    _, _, s = parse(m.render())
    assert ("minirouter_upstream_target_up", t1) not in s
    assert ("minirouter_upstream_failures_total", t1) not in s


def test_gauges_and_reloads() -> None:
    m = Metrics()
    for _ in range(3):
        m.connection_opened()
    m.connection_closed()
    m.set_revision(42)
    m.reload(True)
    m.reload(True)
    m.reload(False)
    _, _, s = parse(m.render())
    assert s[("minirouter_open_connections", ())] == 2
    assert s[("minirouter_config_revision", ())] == 42
    assert s[("minirouter_config_reloads_total", (("result", "ok"),))] == 2
    assert s[("minirouter_config_reloads_total", (("result", "error"),))] == 1
    m.connection_closed()
    m.connection_closed()
    m.connection_closed()  # never below zero
    _, _, s = parse(m.render())
    assert s[("minirouter_open_connections", ())] == 0


def test_connection_cap_counters() -> None:
    m = Metrics()
    m.connection_refused()
    m.connection_refused()
    m.connection_evicted()
    _, _, s = parse(m.render())
    assert s[("minirouter_connections_refused_total", ())] == 2
    assert s[("minirouter_connections_evicted_total", ())] == 1


def test_store_behind_gauge_in_store_mode() -> None:
    m = Metrics()
    m.set_store_behind(True)
    types, _, s = parse(m.render())
    assert "minirouter_store_behind" not in types  # not following a store: left out
    m.store_up(True)
    types, helps, s = parse(m.render())
    assert types["minirouter_store_behind"] == "gauge"
    assert helps["minirouter_store_behind"]
    assert s[("minirouter_store_behind", ())] == 1
    m.set_store_behind(False)
    _, _, s = parse(m.render())
    assert s[("minirouter_store_behind", ())] == 0


def test_label_values_are_escaped() -> None:
    nasty = 'a"b\\c\nd'
    assert escape_label(nasty) == 'a\\"b\\\\c\\nd'
    m = Metrics()
    m.request_done(nasty, 200, 0.1, 0, 0)
    text = m.render()
    assert b'route="a\\"b\\\\c\\nd"' in text  # escaped on the wire, on one line
    _, _, s = parse(text)
    assert s[("minirouter_requests_total", (("route", nasty), ("status", "200")))] == 1
    assert s[("minirouter_request_duration_seconds_count", (("route", nasty),))] == 1


def test_render_is_deterministic() -> None:
    m = Metrics()
    for route in ("b", "a", "c"):
        m.request_done(route, 200, 0.1, 1, 1)
    assert m.render() == m.render()
    lines = [ln for ln in m.render().decode().splitlines() if ln.startswith("minirouter_requests")]
    assert lines == sorted(lines)


def test_l4_listener_series_and_forgetting() -> None:
    m = Metrics()
    pg = m.listener("pg")
    assert m.listener("pg") is pg  # one counters object per listener, updated in place
    pg.up = 1
    pg.connections += 3
    pg.open += 1
    pg.bytes_in += 100
    pg.bytes_out += 2500
    pg.connect_failures += 2
    m.listener("down")  # a port that could not be opened: up stays 0
    types, _, s = parse(m.render())
    assert types["minirouter_l4_connections_total"] == "counter"
    assert types["minirouter_l4_open_connections"] == "gauge"
    lab = (("listener", "pg"),)
    assert s[("minirouter_l4_listener_up", lab)] == 1
    assert s[("minirouter_l4_listener_up", (("listener", "down"),))] == 0
    assert s[("minirouter_l4_connections_total", lab)] == 3
    assert s[("minirouter_l4_open_connections", lab)] == 1
    assert s[("minirouter_l4_received_bytes_total", lab)] == 100
    assert s[("minirouter_l4_sent_bytes_total", lab)] == 2500
    assert s[("minirouter_l4_connect_failures_total", lab)] == 2
    m.forget_listener("pg")
    m.forget_listener("down")
    types, _, s = parse(m.render())
    assert not any(name.startswith("minirouter_l4_") for name in types)


def test_tls_series_only_with_tls_listeners() -> None:
    m = Metrics()
    assert b"minirouter_tls_" not in m.render()
    m.set_certificates({"a": 1_900_000_000.0, "b": None, "c": 2_000_000_000.5})
    m.tls_unknown_names += 2
    types, _, s = parse(m.render())
    assert types["minirouter_tls_unknown_name_total"] == "counter"
    assert s[("minirouter_tls_certificates", ())] == 3
    expiry = "minirouter_tls_certificate_expiry_timestamp_seconds"
    assert s[(expiry, (("certificate", "a"),))] == 1_900_000_000
    assert s[(expiry, (("certificate", "c"),))] == 2_000_000_000.5
    assert (expiry, (("certificate", "b"),)) not in s
    assert s[("minirouter_tls_unknown_name_total", ())] == 2


def test_tls_series_leave_when_no_listener_serves_tls() -> None:
    m = Metrics()
    m.set_certificates({"a": 1_900_000_000.0})
    assert b"minirouter_tls_certificates 1" in m.render()
    m.set_certificates(None)
    assert b"minirouter_tls_" not in m.render()
