"""Smoke test of the TLS benchmark: ``benchmarks/e2e_tls.py --smoke`` runs once, briefly, on real
processes (nginx and ``minirouter core`` terminating TLS, wrk, an L4 listener) and must pass.
It needs the ``wrk`` and ``nginx`` binaries; without them it fails (never skipped)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "e2e_tls.py"
TIMEOUT = 90  # seconds; a passing run takes about fifteen


def _find(binary: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, binary)).exists()),
        None,
    )


def test_tls_smoke(tmp_path: Path) -> None:
    found = {name: _find(name) for name in ("wrk", "nginx")}
    if not all(found.values()):
        pytest.fail(f"e2e_tls.py needs wrk and nginx (nginx-light); found {found}", pytrace=False)
    out_json = tmp_path / "tls.json"
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
    assert done.returncode == 0, f"e2e_tls.py --smoke exited with {done.returncode}\n{output}"
    assert "smoke ok" in done.stdout, output
    data = json.loads(out_json.read_text())
    assert {r["proxy"] for r in data["tls"]} == {"nginx", "minirouter"}
    for r in data["tls"]:
        assert r["handshakes_per_s"] > 0 and r["https_rps"] > 0, output
        assert r["handshake_errors"] == 0 and r["https_errors"] == 0, output
    assert data["l4_mb_per_s"]["minirouter"] > 0, output
