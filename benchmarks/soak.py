#!/usr/bin/env python3
"""Soak: minirouter under a mixed load for ``--duration`` seconds; its RSS and open fds must stay flat.

The upstream and the core are started as ``e2e_load.py`` starts them (shared code); the core gets
short client timeouts (``--timeout``) so that slow clients are cut, and come back, all along. At the
same time, for the whole duration:

* ``wrk`` with keep-alive connections;
* ``wrk`` with ``Connection: close`` (a new connection per request);
* ``wrk`` pipelining 10 requests per write (a Lua script);
* slow clients (slowloris and slow read, from ``slow_clients.py``), re-opened whenever cut.

The core's RSS and open file descriptors are sampled every ``--sample`` seconds; the report gives
them at minute 1 and at the end (minute 5 with the default duration), and fails (exit 1) if the
fds grew by more than ``--max-fd-growth`` or the RSS by more than ``--max-rss-growth`` MiB between
the two, or if wrk saw socket errors.

    python benchmarks/soak.py                   # 300 s
    python benchmarks/soak.py --duration 4 --smoke

Throughput and latency here are not benchmarks (the machine is shared and four loads compete);
the point is that nothing grows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from e2e_load import WRK_GRACE, parse_wrk, script_main, start_proxy, start_upstream
from slow_clients import AttackResult, _attacker

PIPELINE_LUA = """\
init = function(args)
  local r = {}
  for i = 1, 10 do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
"""


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_mib: float
    fds: int
    connections: int  # TCP connections of the core (client and upstream side)


def _sample(proc: psutil.Process, start: float) -> Sample:
    return Sample(
        round(time.monotonic() - start, 1),
        proc.memory_info().rss / 2**20,
        proc.num_fds(),
        len(proc.net_connections(kind="tcp")),
    )


def _slow_clients(port: int, connections: int, stop: threading.Event) -> list[AttackResult]:
    """Slowloris and slow-read connections, each re-opened when cut, until `stop`."""
    results = [AttackResult("minirouter", a, connections, 0) for a in ("slowloris", "slow-read")]

    async def go() -> None:
        done = asyncio.Event()
        tasks = [
            asyncio.ensure_future(_attacker(port, r.attack, 1.0, r, done))
            for r in results
            for _ in range(connections)
        ]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        done.set()
        await asyncio.gather(*tasks)

    asyncio.run(go())
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS/fd samples")
    p.add_argument("--first", type=float, default=60.0, help="the early sample compared (s)")
    p.add_argument("--timeout", type=float, default=5.0, help="the core's client timeouts")
    p.add_argument("--slow", type=int, default=50, help="slowloris and slow-read connections each")
    p.add_argument("--max-fd-growth", type=int, default=20)
    p.add_argument("--max-rss-growth", type=float, default=20.0, help="MiB")
    p.add_argument("--smoke", action="store_true", help="short sampling for a run of seconds")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the samples as JSON")
    p.add_argument(
        "--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary"
    )
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    p.add_argument("--minirouter-cmd", help="command that runs minirouter (default: this Python)")
    args = p.parse_args(argv)
    if args.smoke:
        args.first = min(args.first, args.duration / 3)
        args.sample = min(args.sample, args.duration / 6)
        args.slow = min(args.slow, 10)
        args.timeout = min(args.timeout, 1.0)
    return args


def run(args: argparse.Namespace) -> int:
    t = f"{args.timeout:g}"
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="minirouter-soak-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        _, up_port = start_upstream(args.nginx, tmp, stack)
        core, port = start_proxy(
            "minirouter",
            tmp,
            stack,
            nginx=args.nginx,
            minirouter_cmd=args.minirouter_cmd,
            upstream_port=up_port,
            minirouter_args=["--header-timeout", t, "--body-timeout", t, "--send-timeout", t],
        )
        proc = psutil.Process(core.proc.pid)
        lua = tmp / "pipeline.lua"
        lua.write_text(PIPELINE_LUA)
        url = f"http://127.0.0.1:{port}/"
        seconds = f"{max(1, round(args.duration))}s"
        loads = {
            "keep-alive": ["-c", "20"],
            "close": ["-c", "10", "-H", "Connection: close"],
            "pipelined": ["-c", "10", "-s", str(lua)],
        }
        wrks = {
            name: subprocess.Popen(
                [args.wrk, "-t", "1", "-d", seconds, "--latency", "--timeout", "5s", *extra, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name, extra in loads.items()
        }
        for w in wrks.values():
            stack.callback(w.kill)
        stop = threading.Event()
        slow_results: list[AttackResult] = []
        slow = threading.Thread(
            target=lambda: slow_results.extend(_slow_clients(port, args.slow, stop)), daemon=True
        )
        slow.start()
        start = time.monotonic()
        samples = [_sample(proc, start)]
        while time.monotonic() - start < args.duration:
            time.sleep(min(args.sample, max(0.0, args.duration - (time.monotonic() - start))))
            samples.append(_sample(proc, start))
        stop.set()
        outputs = {}
        for name, w in wrks.items():
            out, _ = w.communicate(timeout=WRK_GRACE)
            outputs[name] = parse_wrk(out)
        slow.join(30)
        end = _sample(proc, start)

    early = min(samples, key=lambda s: abs(s.at - args.first))
    late = samples[-1]
    print(
        f"\nsoak: {args.duration:g} s, core timeouts {t} s, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'load':<12} {'requests':>9} {'req/s':>8} {'p99 ms':>8} {'sock err':>8} {'non-2xx':>7}")
    errors = 0
    for name, r in outputs.items():
        sock = sum(r.socket_errors.values())
        errors += sock + r.non_2xx_3xx
        print(
            f"{name:<12} {r.requests:>9} {r.rps:>8.0f} {r.p99_ms:>8.2f} {sock:>8} {r.non_2xx_3xx:>7}"
        )
    for a in slow_results:
        print(f"{a.attack:<12} {a.attack_opened:>9} connections opened, {a.attack_cut} cut")
    print(f"{'at s':>6} {'RSS MiB':>8} {'fds':>5} {'tcp':>5}")
    for s in samples:
        print(f"{s.at:>6.0f} {s.rss_mib:>8.1f} {s.fds:>5} {s.connections:>5}")
    print(
        f"minute-1 sample (t={early.at:g}s): RSS {early.rss_mib:.1f} MiB, {early.fds} fds; "
        f"end (t={late.at:g}s): RSS {late.rss_mib:.1f} MiB, {late.fds} fds; "
        f"after the load: {end.fds} fds"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "samples": [asdict(s) for s in samples],
                    "after": asdict(end),
                    "wrk": {k: {**asdict(v), "output": ""} for k, v in outputs.items()},
                },
                indent=2,
            )
            + "\n"
        )
    problems = []
    if late.fds - early.fds > args.max_fd_growth:
        problems.append(f"fds grew {early.fds} -> {late.fds}")
    if late.rss_mib - early.rss_mib > args.max_rss_growth:
        problems.append(f"RSS grew {early.rss_mib:.1f} -> {late.rss_mib:.1f} MiB")
    if errors:
        problems.append(f"{errors} wrk errors")
    if any(r.requests <= 0 for r in outputs.values()):
        problems.append("a wrk load served no requests")
    if problems:
        print("SOAK FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("soak ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("soak", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
