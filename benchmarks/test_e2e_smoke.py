"""Smoke test for the end-to-end load comparison: both proxies serve real traffic from wrk.

Runs ``benchmarks/e2e_load.py --smoke`` (1 s of wrk with 4 connections against nginx and against
``minirouter core``, each in front of the same nginx upstream) and checks that it passed and
printed a row for each proxy. It needs the ``wrk`` and ``nginx`` binaries; without them it fails
(it is never skipped) and says which Debian package to install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "e2e_load.py"
TIMEOUT = 60  # seconds; a passing run takes a few


def _find(binary: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, binary)).exists()),
        None,
    )


def test_e2e_smoke(tmp_path: Path) -> None:
    binaries = {"wrk": "wrk", "nginx": "nginx-light"}
    found = {name: _find(name) for name in binaries}
    missing = [f"`{name}` (apt-get install {binaries[name]})" for name, p in found.items() if not p]
    if missing:
        pytest.fail("the end-to-end smoke test needs " + " and ".join(missing), pytrace=False)

    out_json = tmp_path / "smoke.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--smoke",
        "--json",
        str(out_json),
        "--nginx",
        str(found["nginx"]),
        "--wrk",
        str(found["wrk"]),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
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
