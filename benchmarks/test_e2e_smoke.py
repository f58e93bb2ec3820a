"""Smoke tests of the end-to-end benchmarks: each runs once, briefly, on real processes.

Runs ``benchmarks/e2e_load.py --smoke`` (1 s of wrk with 4 connections against nginx and against
``minirouter core``, each in front of the same nginx upstream) and checks that it passed and
printed a row for each proxy; ``slow_clients.py --smoke`` (three slow-client attacks of 1.5 s on
both proxies: no probe fails), ``soak.py --smoke`` (4 s of the mixed load) and
``e2e_tls.py --smoke`` (TLS handshakes, HTTPS requests and an L4 stream) and
``instructions.py --smoke`` (the core under callgrind). They need the
``wrk`` and ``nginx`` binaries; without them they fail (never skipped) and say which Debian
package to install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT_DIR = Path(__file__).resolve().parent
TIMEOUT = 60  # seconds; a passing run takes a few
TLS_TIMEOUT = 90  # seconds; a passing e2e_tls.py --smoke takes about fifteen


def _find(binary: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, binary)).exists()),
        None,
    )


def test_e2e_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "smoke.json"
    done = _run_script("e2e_load.py", "--smoke", "--json", str(out_json), timeout=TIMEOUT, wrk=True)
    output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, f"e2e_load.py --smoke exited with {done.returncode}\n{output}"

    rows = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"nginx", "minirouter", "minirouter/nginx"} <= rows, output
    assert "smoke ok" in done.stdout, output

    results = json.loads(out_json.read_text())["results"]
    for proxy in ("nginx", "minirouter"):
        r = results[proxy]
        assert r["requests"] > 0, (proxy, r)
        assert r["errors"] == 0, (proxy, r)
        assert r["rps"] > 0 and r["cpu_us_per_req"] > 0, (proxy, r)


def _run_script(
    name: str, *args: str, timeout: float, wrk: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script of this directory with the nginx (and, for the scripts that take
    `--wrk`, wrk) binaries found here; fail, naming the Debian packages, when one is missing."""
    binaries = {"wrk": "wrk", "nginx": "nginx-light"}
    found = {b: _find(b) for b in binaries}
    missing = [f"`{b}` (apt-get install {binaries[b]})" for b, p in found.items() if not p]
    if missing:
        pytest.fail(f"{name} needs " + " and ".join(missing), pytrace=False)
    cmd = [sys.executable, str(SCRIPT_DIR / name), "--nginx", str(found["nginx"]), *args]
    if wrk:
        cmd += ["--wrk", str(found["wrk"])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_slow_clients_smoke(tmp_path: Path) -> None:
    """slowloris, slow POST and slow read against both proxies: no probe request fails."""
    out_json = tmp_path / "slow.json"
    done = _run_script("slow_clients.py", "--smoke", "--json", str(out_json), timeout=TIMEOUT)
    output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, output
    assert "smoke ok" in done.stdout, output
    results = json.loads(out_json.read_text())["results"]
    assert {(r["proxy"], r["attack"]) for r in results} == {
        (p, a) for p in ("nginx", "minirouter") for a in ("slowloris", "slow-post", "slow-read")
    }, output
    for r in results:
        assert r["probes"] > 0 and r["probe_failures"] == 0, r
        assert r["attack_opened"] >= r["connections"], r
    # The header timeout (1 s in --smoke) cuts slowloris connections on both proxies.
    assert all(r["attack_cut"] > 0 for r in results if r["attack"] == "slowloris"), output


def test_soak_smoke(tmp_path: Path) -> None:
    """A few seconds of the soak's mixed load: it runs, serves, and fds do not pile up."""
    out_json = tmp_path / "soak.json"
    done = _run_script(
        "soak.py", "--duration", "4", "--smoke", "--json", str(out_json), timeout=TIMEOUT, wrk=True
    )
    output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, output
    assert "soak ok" in done.stdout, output
    doc = json.loads(out_json.read_text())
    assert len(doc["samples"]) >= 3, doc
    assert all(w["requests"] > 0 for w in doc["wrk"].values()), doc["wrk"]


def test_tls_smoke(tmp_path: Path) -> None:
    """e2e_tls.py: handshakes and HTTPS requests through nginx and `minirouter core` terminating
    TLS, and an L4 listener, all served without errors."""
    out_json = tmp_path / "tls.json"
    done = _run_script(
        "e2e_tls.py", "--smoke", "--json", str(out_json), timeout=TLS_TIMEOUT, wrk=True
    )
    output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, f"e2e_tls.py --smoke exited with {done.returncode}\n{output}"
    assert "smoke ok" in done.stdout, output
    data = json.loads(out_json.read_text())
    assert {r["proxy"] for r in data["tls"]} == {"nginx", "minirouter"}
    for r in data["tls"]:
        assert r["handshakes_per_s"] > 0 and r["https_rps"] > 0, output
        assert r["handshake_errors"] == 0 and r["https_errors"] == 0, output
    assert data["l4_mb_per_s"]["minirouter"] > 0, output


def test_instructions_smoke(tmp_path: Path) -> None:
    """instructions.py: the core under callgrind answers, and a per-request count comes out."""
    if not shutil.which("valgrind"):
        pytest.fail("instructions.py needs `valgrind` (apt-get install valgrind)", pytrace=False)
    out_json = tmp_path / "instructions.json"
    done = _run_script("instructions.py", "--smoke", "--json", str(out_json), timeout=TIMEOUT)
    output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, output
    result = json.loads(out_json.read_text())["results"]["compiled"]
    # Far from zero (the counters ran) and far from a whole start-up (they were zeroed).
    assert 10_000 < result["per_request"] < 2_000_000, output
