"""Hypothesis: `apply` -> `export` -> `apply` round-trips with no diff, over generated configs.

Configs are generated valid by construction (ids, hosts, addresses, header names that the
model accepts) but with awkward values where YAML is easily fooled: strings like ``yes``,
``null``, ``1e3``, ``:``, non-ASCII, multi-line PEM text, floats and weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control import pem_material
from minirouter.model import config_from_dict

from .conftest import Cli

ids = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True)
labels = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
dns = st.builds(
    lambda parts: ".".join([*parts, "example"]), st.lists(labels, min_size=1, max_size=2)
)
hosts = st.one_of(dns, dns.map(lambda h: "*." + h), st.sampled_from(["10.1.2.3", "::1"]))
ports = st.integers(1, 65535)
addresses = st.one_of(
    st.builds(lambda h, p: f"{h}:{p}", dns, ports),
    st.builds(lambda p: f"127.0.0.1:{p}", ports),
    st.builds(lambda p: f"[::1]:{p}", ports),
)
# Header values: anything but CR, LF and NUL; YAML-ambiguous words on purpose.
tricky = st.sampled_from(
    [
        "\x85",
        "\u2028",
        "yes",
        "no",
        "on",
        "null",
        "~",
        "1",
        "1e3",
        "0x10",
        ": x",
        "- a",
        "#c",
        "'q'",
        "",
    ]
)
# Valid values only: no CR, LF, NUL, nor lone surrogates (the model refuses those on write,
# see test_model.py; "\uD800" is not even valid YAML).
values = st.one_of(
    tricky,
    st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=("Cs",)), max_size=12),
)
header_names = st.from_regex(r"X-[A-Za-z0-9]{1,8}", fullmatch=True)
seconds = st.one_of(
    st.integers(1, 600), st.floats(0.001, 600, allow_nan=False).map(lambda f: round(f, 3))
)
PEM_PAIRS = [
    (pem_material.CERT, pem_material.KEY),
    (pem_material.OTHER_CERT, pem_material.OTHER_KEY),
]
PEM_NAMES = ["example.com", "*.example.com", "example.org", "gui.test", "www.gui.test"]


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items with the first of each id (ids are unique per kind)."""
    return list({item["id"]: item for item in reversed(items)}.values())[::-1]


@st.composite
def upstreams(draw: st.DrawFn) -> dict[str, Any]:
    targets = draw(st.lists(addresses, min_size=1, max_size=3, unique_by=lambda a: a.lower()))
    shaped: list[Any] = [
        {"address": t, "weight": draw(st.integers(1, 1000))} if draw(st.booleans()) else t
        for t in targets
    ]
    upstream: dict[str, Any] = {"id": draw(ids), "targets": shaped}
    balance = draw(st.sampled_from([None, "round_robin", "least_conn", "hash", "weighted"]))
    if balance is not None:
        upstream["balance"] = balance
    if balance == "hash" and draw(st.booleans()):
        upstream["hash_on"] = "header:" + draw(header_names)
    if draw(st.booleans()):
        upstream["timeouts"] = {"connect": draw(seconds), "idle": draw(seconds)}
    if draw(st.booleans()):
        upstream["health"] = {"path": "/" + draw(labels), "interval": draw(seconds)}
    if draw(st.booleans()):
        upstream.update(tls=True, sni=draw(dns), verify=draw(st.booleans()))
    if draw(st.booleans()):
        upstream["keepalive"] = draw(st.integers(0, 1000))
    return upstream


@st.composite
def routes(draw: st.DrawFn, upstream_ids: list[str]) -> dict[str, Any]:
    route: dict[str, Any] = {"id": draw(ids)}
    if draw(st.booleans()):
        route["hosts"] = draw(st.lists(hosts, max_size=3, unique=True))
    path_type = draw(st.sampled_from(["prefix", "exact", "regex"]))
    if path_type == "regex":
        route.update(path_type="regex", path="^/" + draw(labels) + "/(.*)$")
        if draw(st.booleans()):
            route["rewrite"] = "/x/$1"
    else:
        route["path"] = "/" + "/".join(draw(st.lists(labels, max_size=3)))
        if path_type == "exact":
            route["path_type"] = "exact"
        route["strip_prefix"] = draw(st.booleans())
    if draw(st.booleans()):
        route["methods"] = draw(
            st.lists(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), unique=True)
        )
    if draw(st.booleans()):
        route["headers"] = draw(st.dictionaries(header_names, values, max_size=2))
    route["priority"] = draw(st.integers(-1_000_000, 1_000_000))
    if upstream_ids and draw(st.integers(0, 4)):
        route["upstream"] = draw(st.sampled_from(upstream_ids))
    else:
        route["redirect"] = {
            "to": "https://" + draw(dns) + "$path",
            "code": draw(st.sampled_from([301, 308])),
        }
    if draw(st.booleans()):
        route["request_headers"] = {"set": draw(st.dictionaries(header_names, values, max_size=2))}
    route["enabled"] = draw(st.booleans())
    route["retries"] = draw(st.integers(0, 10))
    return route


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    ups = _unique(draw(st.lists(upstreams(), max_size=3)))
    upstream_ids = [u["id"] for u in ups]
    config: dict[str, Any] = {"upstreams": ups}
    config["routes"] = _unique(draw(st.lists(routes(upstream_ids), max_size=5)))
    if upstream_ids:
        listeners = draw(
            st.lists(
                st.builds(
                    lambda i, p, u: {"id": i, "listen": f"0.0.0.0:{p}", "upstream": u},
                    ids,
                    ports,
                    st.sampled_from(upstream_ids),
                ),
                max_size=2,
            )
        )
        config["listeners"] = _unique(listeners)
    # Certificates must be real (the model parses them, checks the key and the names): one of
    # two throwaway pairs, with names their SAN covers.
    certs = draw(
        st.lists(
            st.builds(
                lambda i, names, pair: {"id": i, "names": names, "cert": pair[0], "key": pair[1]},
                ids,
                st.lists(st.sampled_from(PEM_NAMES), min_size=1, max_size=2, unique=True),
                st.sampled_from(PEM_PAIRS),
            ),
            max_size=2,
        )
    )
    config["certificates"] = _unique(certs)
    return config


def _sorted(config: Any) -> dict[str, list[Any]]:
    return {
        kind: sorted(getattr(config, kind), key=lambda i: i.id)
        for kind in ("upstreams", "routes", "listeners", "certificates")
    }


@settings(
    max_examples=25,
    deadline=None,
    # One store for all examples: each one replaces the whole config (--prune), on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(config=configs(), as_json=st.booleans())
def test_apply_export_apply_has_no_diff(
    cli: Cli, tmp_path: Path, config: dict[str, Any], as_json: bool
) -> None:
    source = tmp_path / ("in.json" if as_json else "in.yaml")
    if as_json:
        source.write_text(json.dumps(config))
    else:
        # Non-ASCII escaped: written raw, PyYAML's NEL / LS / PS would load back as line breaks.
        source.write_text(yaml.safe_dump(config))
    cli.ok("apply", "-f", str(source), "--prune", "--yes")
    expected = config_from_dict(config)
    assert _sorted(cli.config()) == _sorted(expected)

    exported = tmp_path / "out.yaml"
    cli.ok("export", "-o", str(exported))
    rev = cli.rev()
    again = cli.ok("apply", "-f", str(exported), "--prune", "--yes").stdout
    assert again == f"No changes (store at revision {rev}).\n"
    assert cli.rev() == rev
    assert cli.ok("export").stdout == exported.read_text()
