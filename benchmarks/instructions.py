#!/usr/bin/env python3
"""Userland instructions per proxied request, counted by callgrind: a number that does not move
with the machine's load (unlike CPU time), for comparing two builds of the core.

`minirouter core` runs under ``valgrind --tool=callgrind`` in front of the nginx upstream of
`e2e_load.py`. After a warm-up, the counters are zeroed, a plain-socket client sends `--requests`
keep-alive GETs over `--connections` connections (one request in flight per connection, each
response read whole), and the counters are dumped: the instructions the core's process executed
in user space (Python, uvloop, httptools, the compiled modules, libc), divided by the requests.
Kernel work (system calls, TCP) is not counted: compare that with `e2e_load.py`'s CPU µs/req.

It measures the compiled build and the plain-Python sources (``MINIROUTER_NO_EXTENSIONS=1``) in
turn, unless `--only` says one. Same run, same requests: the ratio is the compiled modules' gain.

    python benchmarks/instructions.py                 # 2000 requests, both builds
    python benchmarks/instructions.py --only compiled --json out.json
    python benchmarks/instructions.py --smoke         # 100 requests, compiled only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import e2e_load

BUILDS = ("compiled", "python")
DUMP_TIMEOUT = 30.0  # seconds callgrind may take to write its dump


def _request(port: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: instructions\r\n\r\n" % port


def drive(port: int, requests: int, connections: int, timeout: float = 60.0) -> None:
    """`requests` GETs over `connections` keep-alive connections, each answer read whole."""
    ending = e2e_load.UPSTREAM_BODY.encode()
    socks = [
        socket.create_connection(("127.0.0.1", port), timeout=timeout) for _ in range(connections)
    ]
    try:
        request = _request(port)
        done = 0
        while done < requests:
            batch = socks[: requests - done]
            for s in batch:
                s.sendall(request)
            for s in batch:
                buf = b""
                while not buf.endswith(ending):
                    data = s.recv(65536)
                    if not data:
                        raise e2e_load.BenchError("the core closed a connection mid-run")
                    buf += data
                if not buf.startswith(b"HTTP/1.1 200 "):
                    raise e2e_load.BenchError(f"unexpected answer: {buf[:80]!r}")
            done += len(batch)
    finally:
        for s in socks:
            s.close()


def _totals(path: Path) -> int:
    match = re.search(r"^totals: (\d+)", path.read_text(), re.M)
    if match is None:
        raise e2e_load.BenchError(f"no totals in {path}")
    return int(match.group(1))


def measure(build: str, args: argparse.Namespace, nginx: str) -> dict[str, float]:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        _, up_port = e2e_load.start_upstream(nginx, tmp, stack)
        out = tmp / "callgrind.out"
        cmd = (
            f"{args.valgrind} --tool=callgrind --callgrind-out-file={out} "
            f"{sys.executable} -m minirouter"
        )
        saved = os.environ.get("MINIROUTER_NO_EXTENSIONS")
        os.environ["MINIROUTER_NO_EXTENSIONS"] = "1" if build == "python" else "0"
        try:
            server, port = e2e_load.start_proxy(
                "minirouter", tmp, stack, nginx=nginx, minirouter_cmd=cmd, upstream_port=up_port
            )
        finally:
            if saved is None:
                del os.environ["MINIROUTER_NO_EXTENSIONS"]
            else:
                os.environ["MINIROUTER_NO_EXTENSIONS"] = saved
        drive(port, args.warmup, args.connections)
        pid = server.tree()[-1].pid
        control = shutil.which("callgrind_control") or "callgrind_control"
        subprocess.run([control, "--zero", str(pid)], check=True, capture_output=True, timeout=60)
        drive(port, args.requests, args.connections)
        subprocess.run([control, "--dump", str(pid)], check=True, capture_output=True, timeout=60)
        dump = Path(f"{out}.1")
        deadline = time.monotonic() + DUMP_TIMEOUT
        while not (dump.exists() and "totals:" in dump.read_text()):
            if time.monotonic() > deadline:
                raise e2e_load.BenchError(f"callgrind wrote no dump for pid {pid}")
            time.sleep(0.2)
        total = _totals(dump)
    return {"instructions": total, "per_request": total / args.requests}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--requests", type=int, default=2000, help="measured requests")
    p.add_argument(
        "--warmup", type=int, default=200, help="requests before the counters are zeroed"
    )
    p.add_argument("--connections", type=int, default=10, help="keep-alive connections")
    p.add_argument("--only", choices=BUILDS, help="measure one build only")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument("--smoke", action="store_true", help="100 requests, the compiled build only")
    p.add_argument(
        "--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary"
    )
    p.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    args = p.parse_args(argv)
    if args.smoke:
        args.requests, args.warmup, args.only = 100, 20, "compiled"
    for binary, pkg in ((args.nginx, "nginx-light"), (args.valgrind, "valgrind")):
        if not (os.path.exists(binary) or shutil.which(binary)):
            p.error(f"{binary} not found: install the Debian package {pkg} (apt-get install {pkg})")
    return args


def run(args: argparse.Namespace) -> int:
    builds = [args.only] if args.only else list(BUILDS)
    results = {build: measure(build, args, args.nginx) for build in builds}
    print(f"callgrind, {args.requests} requests over {args.connections} keep-alive connections")
    print(f"{'build':<10} {'instructions/request':>22}")
    for build, r in results.items():
        print(f"{build:<10} {r['per_request']:>22,.0f}")
    if len(results) == 2:
        ratio = results["python"]["per_request"] / results["compiled"]["per_request"]
        print(f"python / compiled: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"requests": args.requests, "results": results}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return e2e_load.script_main("instructions", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
