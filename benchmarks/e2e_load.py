#!/usr/bin/env python3
"""End-to-end load comparison: minirouter vs nginx as a reverse proxy in front of one upstream.

One fast upstream (a separate nginx instance answering ``return 200``) is started on 127.0.0.1.
Then, in turn, each proxy is started in front of it and ``wrk --latency`` is run against it:

* ``nginx``: ``proxy_pass`` to an upstream block with ``keepalive 64``, HTTP/1.1, ``Connection ""``;
* ``minirouter``: ``minirouter core --config X --listen ... --access-log off --workers 1``.

For each proxy it prints requests/s, p50 / p99 latency, the proxy's CPU time per request (user + sys
of the proxy's processes, before/after the measured run, divided by the requests wrk completed), its
peak RSS, and the ratio minirouter / nginx. ``--json PATH`` writes the same as JSON; ``--compare
OLD.json`` prints the change against an earlier run. ``--smoke`` is a 1 s, 4-connection sanity run
that fails (exit 1) unless both proxies served requests with no socket errors and only 2xx/3xx.

Every process runs in a temporary directory on free 127.0.0.1 ports and is terminated at the end,
also on error, Ctrl-C or SIGTERM; every wait has a deadline.

    python benchmarks/e2e_load.py                       # 10 s, 50 connections, both proxies
    python benchmarks/e2e_load.py --pin --json out.json # proxy on CPU 1, wrk + upstream on CPU 0
    python benchmarks/e2e_load.py --only nginx --duration 3
    python benchmarks/e2e_load.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, TextIO

import psutil

PROXIES = ("nginx", "minirouter")
UPSTREAM_BODY = "minirouter-e2e-ok\n"
READY_TIMEOUT = 30.0  # seconds a server gets to answer through its route
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
WRK_GRACE = 30.0  # seconds wrk may run past its own --duration before it is killed
REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A setup or measurement failure, reported as one line (plus a log tail) and exit code 1."""


# --------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Loaded here, not in the child: between fork and exec only the prctl call itself runs.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the child if this script dies without cleaning up."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """``cmd`` prefixed with ``taskset -c CPUS`` (taskset execs, so the pid stays the same)."""
    if cpus is None:
        return list(cmd)
    taskset = shutil.which("taskset")
    if taskset is None:
        raise BenchError("--pin needs taskset (Debian package util-linux)")
    return [taskset, "-c", cpus, *cmd]


@dataclass
class Server:
    """A long-running process started by this script, with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: BinaryIO

    def tree(self) -> list[psutil.Process]:
        """The process and its live descendants (workers)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            self.log_file.flush()
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM the process (and any descendants left behind), SIGKILL after STOP_TIMEOUT."""
        try:
            descendants = self.tree()[1:]
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
            for child in descendants:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.terminate()
            _gone, alive = psutil.wait_procs(descendants, timeout=STOP_TIMEOUT)
            for child in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
        finally:
            self.log_file.close()


def start_server(
    name: str,
    cmd: Sequence[str],
    workdir: Path,
    stack: contextlib.ExitStack,
    env: dict[str, str] | None = None,
) -> Server:
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("wb")
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches this script only; it stops the servers itself
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        log_file.close()
        raise BenchError(f"cannot start {name}: {exc}") from exc
    server = Server(name, proc, log_path, log_file)
    stack.callback(server.stop)
    return server


def wait_ready(server: Server, port: int, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``GET /`` on ``port`` until it answers 200 with the upstream's body."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with code {server.proc.returncode} while starting; "
                f"log:\n{server.log_tail()}"
            )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status == 200 and body == UPSTREAM_BODY:
                return
            last = f"HTTP {resp.status} {body[:80]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.05)
    raise BenchError(
        f"{server.name} not ready on 127.0.0.1:{port} after {timeout:.0f}s ({last}); "
        f"log:\n{server.log_tail()}"
    )


# --------------------------------------------------------------------------------------------------
# configs


def nginx_conf(workdir: Path, server_block: str, extra_http: str = "") -> Path:
    """A self-contained nginx.conf: one process, every path inside ``workdir``."""
    conf = f"""\
worker_processes 1;
master_process off;
daemon off;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{extra_http}
    server {{
{server_block}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_cmd(nginx: str, workdir: Path, conf: Path) -> list[str]:
    return [
        nginx,
        "-p",
        f"{workdir}/",
        "-c",
        str(conf),
        "-e",
        f"{workdir}/error.log",
        "-g",
        f"pid {workdir}/nginx.pid;",
    ]


BIG_BODY_SIZE = 1 << 20  # bytes of the upstream's /big (for slow-read clients)


def upstream_conf(workdir: Path, port: int) -> Path:
    """``/``: a short 200. For the slow-client benchmarks also ``/big`` (a 1 MiB file) and
    ``/post``, which reads the whole request body before answering (nginx buffers it to proxy
    it to ``/`` of itself), as an application would."""
    body = UPSTREAM_BODY.replace("\n", "\\n")
    (workdir / "big.bin").write_bytes(b"x" * BIG_BODY_SIZE)
    return nginx_conf(
        workdir,
        f"""\
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{body}"; }}
        location = /big {{ default_type application/octet-stream; alias {workdir}/big.bin; }}
        location = /post {{ proxy_pass http://127.0.0.1:{port}/; }}""",
    )


def nginx_proxy_conf(
    workdir: Path, port: int, upstream_port: int, directives: str = "", listen_options: str = ""
) -> Path:
    """nginx proxying to the upstream; `directives` are added to its server block and
    `listen_options` (e.g. "ssl") to its listen directive."""
    # The X-Forwarded-* headers match what minirouter adds by default, so both do the same work.
    return nginx_conf(
        workdir,
        f"""\
        listen 127.0.0.1:{port} {listen_options} backlog=4096;
{directives}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}""",
        extra_http=f"""\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}""",
    )


def minirouter_conf(workdir: Path, upstream_port: int) -> Path:
    # JSON is a subset of YAML: no YAML library needed here.
    config = {
        "upstreams": [{"id": "app", "targets": [f"127.0.0.1:{upstream_port}"], "keepalive": 64}],
        "routes": [{"id": "all", "path": "/", "upstream": "app"}],
    }
    path = workdir / "minirouter.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def minirouter_base_cmd(override: str | None) -> list[str]:
    if override:
        return shlex.split(override)
    if importlib.util.find_spec("minirouter.__main__") is not None:
        return [sys.executable, "-m", "minirouter"]
    script = Path(sys.executable).parent / "minirouter"
    if script.exists():
        return [str(script)]
    raise BenchError(
        "minirouter is not importable from this Python; install it (pip install -e .) "
        "or pass --minirouter-cmd"
    )


def start_upstream(
    nginx: str, tmp: Path, stack: contextlib.ExitStack, cpus: str | None = None
) -> tuple[Server, int]:
    """The fast upstream (nginx answering ``return 200``), ready; stopped when `stack` closes."""
    up_dir = tmp / "upstream"
    up_dir.mkdir()
    up_port = free_port()
    upstream = start_server(
        "upstream-nginx",
        pinned(nginx_cmd(nginx, up_dir, upstream_conf(up_dir, up_port)), cpus),
        up_dir,
        stack,
    )
    wait_ready(upstream, up_port)
    return upstream, up_port


def start_proxy(
    name: str,
    tmp: Path,
    stack: contextlib.ExitStack,
    *,
    nginx: str,
    minirouter_cmd: str | None,
    upstream_port: int,
    cpus: str | None = None,
    minirouter_args: Sequence[str] = (),
    nginx_directives: str = "",
) -> tuple[Server, int]:
    """Proxy `name` ("nginx" or "minirouter") in front of the upstream, ready, and its port.

    `minirouter_args` are added to ``minirouter core``; `nginx_directives` to nginx's server block
    (the benchmarks that compare limits and timeouts set the same ones on both)."""
    workdir = tmp / name
    workdir.mkdir()
    port = free_port()
    env: dict[str, str] | None = None
    if name == "nginx":
        cmd = nginx_cmd(
            nginx, workdir, nginx_proxy_conf(workdir, port, upstream_port, nginx_directives)
        )
    else:
        cmd = [
            *minirouter_base_cmd(minirouter_cmd),
            "core",
            "--config",
            str(minirouter_conf(workdir, upstream_port)),
            "--listen",
            f"127.0.0.1:{port}",
            "--access-log",
            "off",
            "--workers",
            "1",
            *minirouter_args,
        ]
        # Keep any default state (embedded store, last-good snapshot) inside the temp dir.
        env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "HOME": str(workdir)}
    server = start_server(name, pinned(cmd, cpus), workdir, stack, env)
    wait_ready(server, port)
    return server, port


# --------------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: dict[str, int]
    non_2xx_3xx: int
    output: str = field(repr=False)


_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _time_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Parse the text ``wrk --latency`` prints."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    if m is None or rps is None:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    percentiles: dict[str, float] = {}
    for pm in re.finditer(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        percentiles[pm.group(1)] = _time_ms(pm.group(2), pm.group(3))
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    em = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if em is not None:
        errors = dict(zip(errors, map(int, em.groups()), strict=True))
    nm = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=_time_ms(m.group(2), m.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        socket_errors=errors,
        non_2xx_3xx=int(nm.group(1)) if nm else 0,
        output=output,
    )


def run_wrk(
    wrk: str, port: int, duration: float, connections: int, threads: int, cpus: str | None
) -> tuple[WrkResult, float]:
    """Run wrk; return the parsed result and wrk's own CPU seconds (user + sys)."""
    cmd = pinned(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        cpus,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=duration + WRK_GRACE)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"wrk did not finish within {duration + WRK_GRACE:.0f}s") from exc
        finally:
            # Also on Ctrl-C / SIGTERM: never leave wrk running or unreaped.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{stdout}{stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_wrk(stdout), cpu


# --------------------------------------------------------------------------------------------------
# measurement


def cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    out: dict[int, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def peak_rss_bytes(procs: Sequence[psutil.Process]) -> int:
    """Sum over the processes of their peak RSS (VmHWM on Linux, else the current RSS)."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            status = Path(f"/proc/{p.pid}/status")
            if status.exists():
                m = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
                if m:
                    total += int(m.group(1)) * 1024
                    continue
            total += p.memory_info().rss
    return total


@dataclass
class ProxyResult:
    proxy: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    proxy_cpu_pct: float  # proxy CPU seconds / wall seconds (100 = one core busy)
    upstream_cpu_us_per_req: float
    wrk_cpu_pct: float
    max_rss_mib: float
    processes: int
    socket_errors: dict[str, int]
    non_2xx_3xx: int

    @property
    def error_count(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx


def measure(
    name: str,
    server: Server,
    upstream: Server,
    port: int,
    args: argparse.Namespace,
    wrk_cpus: str | None,
) -> ProxyResult:
    procs = server.tree()
    if not procs:
        raise BenchError(f"{name} is not running; log:\n{server.log_tail()}")
    before = cpu_seconds(procs)
    up_before = cpu_seconds(upstream.tree())
    t0 = time.monotonic()
    res, wrk_cpu = run_wrk(args.wrk, port, args.duration, args.connections, args.threads, wrk_cpus)
    wall = time.monotonic() - t0
    procs = server.tree()  # a worker may have been started meanwhile: count it from zero
    after = cpu_seconds(procs)
    up_after = cpu_seconds(upstream.tree())
    if server.proc.poll() is not None:
        raise BenchError(
            f"{name} exited with code {server.proc.returncode} under load; "
            f"log:\n{server.log_tail()}"
        )
    cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    up_cpu = sum(up_after[pid] - up_before.get(pid, 0.0) for pid in up_after)
    reqs = max(res.requests, 1)
    return ProxyResult(
        proxy=name,
        requests=res.requests,
        seconds=res.seconds,
        rps=res.rps,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        cpu_us_per_req=cpu / reqs * 1e6,
        proxy_cpu_pct=cpu / wall * 100,
        upstream_cpu_us_per_req=up_cpu / reqs * 1e6,
        wrk_cpu_pct=wrk_cpu / wall * 100,
        max_rss_mib=peak_rss_bytes(procs) / 2**20,
        processes=len(procs),
        socket_errors=res.socket_errors,
        non_2xx_3xx=res.non_2xx_3xx,
    )


def summarize(runs: Sequence[ProxyResult]) -> ProxyResult:
    """One result from several runs: the median of each number; requests and errors summed."""
    if len(runs) == 1:
        return runs[0]

    def med(attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs))

    return ProxyResult(
        proxy=runs[0].proxy,
        requests=sum(r.requests for r in runs),
        seconds=sum(r.seconds for r in runs),
        rps=med("rps"),
        p50_ms=med("p50_ms"),
        p99_ms=med("p99_ms"),
        cpu_us_per_req=med("cpu_us_per_req"),
        proxy_cpu_pct=med("proxy_cpu_pct"),
        upstream_cpu_us_per_req=med("upstream_cpu_us_per_req"),
        wrk_cpu_pct=med("wrk_cpu_pct"),
        max_rss_mib=max(r.max_rss_mib for r in runs),
        processes=max(r.processes for r in runs),
        socket_errors={k: sum(r.socket_errors[k] for r in runs) for k in runs[0].socket_errors},
        non_2xx_3xx=sum(r.non_2xx_3xx for r in runs),
    )


# --------------------------------------------------------------------------------------------------
# report


COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, attribute, format)
    ("req/s", "rps", "{:>10.0f}"),
    ("p50 ms", "p50_ms", "{:>8.3f}"),
    ("p99 ms", "p99_ms", "{:>8.3f}"),
    ("CPU us/req", "cpu_us_per_req", "{:>10.1f}"),
    ("proxy CPU%", "proxy_cpu_pct", "{:>10.0f}"),
    ("max RSS MiB", "max_rss_mib", "{:>11.1f}"),
    ("errors", "error_count", "{:>6d}"),
    ("wrk CPU%", "wrk_cpu_pct", "{:>8.0f}"),
)
RATIO_KEYS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "max_rss_mib")


def ratios(results: dict[str, ProxyResult]) -> dict[str, float]:
    if "nginx" not in results or "minirouter" not in results:
        return {}
    mr, ng = results["minirouter"], results["nginx"]
    out: dict[str, float] = {}
    for key in RATIO_KEYS:
        denom = getattr(ng, key)
        out[key] = getattr(mr, key) / denom if denom else float("nan")
    return out


def print_table(results: dict[str, ProxyResult], out: TextIO = sys.stdout) -> None:
    widths = [max(len(h), len(fmt.format(0))) for h, _attr, fmt in COLUMNS]
    print(
        f"{'proxy':<18}"
        + " ".join(f"{h:>{w}}" for (h, _a, _f), w in zip(COLUMNS, widths, strict=True)),
        file=out,
    )
    for name, r in results.items():
        cells = [fmt.format(getattr(r, attr)) for _h, attr, fmt in COLUMNS]
        print(
            f"{name:<18}" + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)),
            file=out,
        )
    rat = ratios(results)
    if rat:
        cells = []
        for (_h, attr, _f), w in zip(COLUMNS, widths, strict=True):
            cells.append(f"{rat[attr]:>{w - 1}.2f}x" if attr in rat else f"{'':>{w}}")
        print(f"{'minirouter/nginx':<18}" + " ".join(cells), file=out)
    for name, r in results.items():
        errs = {k: v for k, v in r.socket_errors.items() if v}
        if errs or r.non_2xx_3xx:
            print(f"  {name}: socket errors {errs or 0}, non-2xx/3xx {r.non_2xx_3xx}", file=out)


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def print_compare(old: dict[str, Any], results: dict[str, ProxyResult]) -> None:
    print(
        f"\nchange against {old.get('started', '?')} (commit {old.get('git', {}).get('commit')}):"
    )
    for name, r in results.items():
        prev = old.get("results", {}).get(name)
        if not prev:
            continue
        parts = []
        for key in RATIO_KEYS:
            a, b = prev.get(key), getattr(r, key)
            if a:
                parts.append(f"{key} {_num(a)} -> {_num(b)} ({(b - a) / a * 100:+.1f}%)")
        print(f"  {name}: " + ", ".join(parts))


def _run_quiet(cmd: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (done.stdout + done.stderr).strip()
    return ""


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu_model = m.group(1) if m else ""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "nginx": _run_quiet([args.nginx, "-v"]).removeprefix("nginx version: "),
        "wrk": next(iter(_run_quiet([args.wrk, "--version"]).splitlines()), ""),
    }


def git_info() -> dict[str, Any]:
    commit = _run_quiet(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = bool(
        _run_quiet(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    )
    return {"commit": commit or None, "dirty": dirty}


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    p.add_argument("--connections", type=int, default=50, help="wrk -c")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk run first")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured runs per proxy, alternating; the table shows the median of each number",
    )
    p.add_argument("--only", choices=PROXIES, help="measure one proxy only")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxy to CPU 1 and wrk + the upstream to CPU 0 (with taskset)",
    )
    p.add_argument("--proxy-cpus", help="taskset CPU list for the proxy (implies pinning)")
    p.add_argument("--client-cpus", help="taskset CPU list for wrk and the upstream")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument(
        "--compare", type=Path, metavar="OLD", help="print the change against an earlier --json"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="1 s, 4 connections, no warm-up; exit 1 unless every proxy served only 2xx/3xx "
        "with no socket errors",
    )
    p.add_argument(
        "--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary"
    )
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    p.add_argument(
        "--minirouter-cmd",
        help="command that runs the minirouter CLI (default: this Python -m minirouter)",
    )
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (logs, configs)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.connections, args.warmup, args.repeat = 1.0, 4, 0.0, 1
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.pin:
        if (os.cpu_count() or 1) < 2:
            p.error("--pin needs at least 2 CPUs")
        args.proxy_cpus = args.proxy_cpus or "1"
        args.client_cpus = args.client_cpus or "0"
    for binary, pkg in ((args.nginx, "nginx-light"), (args.wrk, "wrk")):
        if not (os.path.exists(binary) or shutil.which(binary)):
            p.error(f"{binary} not found: install the Debian package {pkg} (apt-get install {pkg})")
    return args


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT / SIGTERM stops the run; later ones are ignored so the cleanup can finish
    (it is bounded: STOP_TIMEOUT per process, and the kernel kills what is left if this script
    is killed outright)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    proxies = [args.only] if args.only else list(PROXIES)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="minirouter-e2e-"))
        if args.keep_tmp:
            print(f"temporary directory: {tmp}", file=sys.stderr)
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)

        upstream, up_port = start_upstream(args.nginx, tmp, stack, args.client_cpus)

        # Start every proxy once (an idle one costs nothing), then measure them in turn;
        # with --repeat the turns alternate, so slow drifts on the machine hit both alike.
        servers: dict[str, tuple[Server, int]] = {}
        for name in proxies:
            servers[name] = start_proxy(
                name,
                tmp,
                stack,
                nginx=args.nginx,
                minirouter_cmd=args.minirouter_cmd,
                upstream_port=up_port,
                cpus=args.proxy_cpus,
            )

        runs: dict[str, list[ProxyResult]] = {name: [] for name in proxies}
        for rep in range(args.repeat):
            for name, (server, port) in servers.items():
                if rep == 0 and args.warmup > 0:
                    run_wrk(
                        args.wrk,
                        port,
                        args.warmup,
                        args.connections,
                        args.threads,
                        args.client_cpus,
                    )
                runs[name].append(measure(name, server, upstream, port, args, args.client_cpus))
        results = {name: summarize(rs) for name, rs in runs.items()}

    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{max(1, round(args.duration))}s, "
        f"warm-up {args.warmup:g}s, "
        + (f"median of {args.repeat} runs, " if args.repeat > 1 else "")
        + "pinning: "
        + (
            f"proxy CPUs {args.proxy_cpus}, wrk+upstream CPUs {args.client_cpus}"
            if args.proxy_cpus or args.client_cpus
            else "none"
        )
    )
    load_after = os.getloadavg()
    print(
        f"load average before the run: {load_before[0]:.2f} on {os.cpu_count()} CPUs "
        "(other work on the machine skews req/s and latency; CPU us/req much less)"
    )
    print_table(results)

    if args.compare:
        print_compare(json.loads(args.compare.read_text()), results)
    if args.json:
        doc = {
            "started": started,
            "params": {
                "duration": args.duration,
                "connections": args.connections,
                "threads": args.threads,
                "warmup": args.warmup,
                "proxy_cpus": args.proxy_cpus,
                "client_cpus": args.client_cpus,
                "smoke": args.smoke,
                "repeat": args.repeat,
            },
            "machine": machine_info(args),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "git": git_info(),
            "minirouter_fastpath": _run_quiet(
                [
                    sys.executable,
                    "-c",
                    "from minirouter import fastpath; print(fastpath.IMPLEMENTATION)",
                ]
            ),
            "results": {k: {**asdict(v), "errors": v.error_count} for k, v in results.items()},
            "ratio_minirouter_nginx": ratios(results),
            "runs": {k: [asdict(r) for r in rs] for k, rs in runs.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")

    if args.smoke:
        failures = [
            f"{name}: {r.requests} requests, socket errors {r.socket_errors}, "
            f"non-2xx/3xx {r.non_2xx_3xx}"
            for name, r in results.items()
            if r.requests <= 0 or r.error_count
        ]
        if failures:
            print("SMOKE FAILED: " + "; ".join(failures), file=sys.stderr)
            return 1
        print("smoke ok")
    return 0


def script_main(
    name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """The entry point of a benchmark script: `run(args)`, stopped cleanly (servers included) by
    the first SIGINT / SIGTERM (see `_on_signal`); a BenchError is one line and exit code 1."""
    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored by our parent
        handled.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, _on_signal) for sig in handled}
    try:
        return run(args)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("e2e_load", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
