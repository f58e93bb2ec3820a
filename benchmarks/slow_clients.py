#!/usr/bin/env python3
"""Slow-client attacks (slowloris, slow POST, slow read) against minirouter and nginx, in one run.

A bounded Python stand-in for Debian's ``slowhttptest``. The upstream and the proxies are started
exactly as ``e2e_load.py`` starts them (shared code), with the same timeouts on both proxies
(``--timeout``: minirouter's ``--header-timeout/--body-timeout/--send-timeout``, nginx's
``client_header_timeout/client_body_timeout/send_timeout``). For each proxy and each attack,
``--connections`` attack connections are held open for ``--attack-duration`` seconds (re-opened
when the proxy cuts them, like slowhttptest does) while a probe sends normal requests, each on a
new connection, ``--probe-rate`` per second. It reports, per attack: the probe requests that
failed (error, timeout or a status other than 200), the probe p50/p99 latency, and how many
attack connections the proxy cut. Target: zero failed probes.

* ``slowloris``: a request head that never ends, one more header line every ``--interval`` s;
* ``slow-post``: a complete head announcing a 512 KiB body, then one byte every ``--interval`` s
  (to the upstream's ``/post``, which waits for the whole body);
* ``slow-read``: a request for the upstream's 1 MiB ``/big`` on a connection with a 1 KiB receive
  buffer, then 16 bytes read every ``--interval`` s.

    python benchmarks/slow_clients.py                         # 300 connections, 10 s per attack
    python benchmarks/slow_clients.py --smoke                 # a few seconds: for make test
    python benchmarks/slow_clients.py --only minirouter --json out.json

Timing numbers are noisy on a shared machine; failed probes are not. On Linux the kernel grows a
socket's send buffer until it holds the whole 1 MiB answer, for nginx and minirouter alike, so
neither proxy is still writing (and neither cuts the slow reader by its send timeout) within the
run: what the slow reader pins is kernel socket memory, bounded by ``net.ipv4.tcp_wmem``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e_load import PROXIES, script_main, start_proxy, start_upstream

ATTACKS = ("slowloris", "slow-post", "slow-read")
PROBE_TIMEOUT = 5.0  # seconds a probe request may take before it counts as failed
HEAD = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: slow-clients\r\n"


@dataclass
class AttackResult:
    proxy: str
    attack: str
    connections: int
    seconds: float
    attack_opened: int = 0  # attack connections opened (re-opened after a cut included)
    attack_cut: int = 0  # attack connections the proxy closed
    probes: int = 0
    probe_failures: int = 0
    probe_p50_ms: float = 0.0
    probe_p99_ms: float = 0.0
    failure_examples: list[str] = field(default_factory=list)


# -- attackers -----------------------------------------------------------------------------------


async def _connect(
    port: int, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=rcvbuf)


async def _slowloris(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float
) -> None:
    writer.write(HEAD)
    n = 0
    while True:
        await _sleep_or_closed(reader, interval)
        writer.write(b"X-Slow-%d: %d\r\n" % (n, n))
        await writer.drain()
        n += 1


async def _slow_post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float
) -> None:
    writer.write(b"POST /post HTTP/1.1\r\nHost: bench.test\r\nContent-Length: 524288\r\n\r\n")
    while True:
        await _sleep_or_closed(reader, interval)
        writer.write(b"a")
        await writer.drain()


async def _slow_read(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float
) -> None:
    writer.write(HEAD.replace(b"GET / ", b"GET /big ") + b"\r\n")
    while True:
        await asyncio.sleep(interval)
        data = await reader.read(16)
        if not data:
            raise ConnectionResetError("closed by the proxy")


async def _sleep_or_closed(reader: asyncio.StreamReader, interval: float) -> None:
    """Wait `interval` s, but notice (raise) if the proxy closes the connection meanwhile."""
    try:
        data = await asyncio.wait_for(reader.read(65536), interval)
    except TimeoutError:
        return
    if not data or reader.at_eof():
        raise ConnectionResetError("closed by the proxy")


ATTACKERS: dict[
    str, Callable[[asyncio.StreamReader, asyncio.StreamWriter, float], Awaitable[None]]
] = {
    "slowloris": _slowloris,
    "slow-post": _slow_post,
    "slow-read": _slow_read,
}


async def _attacker(
    port: int, attack: str, interval: float, result: AttackResult, stop: asyncio.Event
) -> None:
    """One attack connection, re-opened each time the proxy cuts it, until `stop`."""
    run = ATTACKERS[attack]
    rcvbuf = 1024 if attack == "slow-read" else None
    while not stop.is_set():
        try:
            reader, writer = await _connect(port, rcvbuf)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        result.attack_opened += 1
        task = asyncio.ensure_future(run(reader, writer, interval))
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            if isinstance(
                task.exception(), (ConnectionError, OSError, asyncio.IncompleteReadError)
            ):
                result.attack_cut += 1
        else:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        writer.transport.abort()


# -- the probe -----------------------------------------------------------------------------------


async def _probe_once(port: int) -> str | None:
    """One normal request on a new connection; None if it succeeded, else why not."""
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + b"Connection: close\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            return f"status {status.decode(errors='replace')}"
        await reader.read()
        return None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.transport.abort()


async def _probe(port: int, rate: float, result: AttackResult, stop: asyncio.Event) -> None:
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        start = time.perf_counter()
        try:
            error = await asyncio.wait_for(_probe_once(port), PROBE_TIMEOUT)
        except TimeoutError:
            error = f"no answer within {PROBE_TIMEOUT:g}s"
        latencies.append(time.perf_counter() - start)
        result.probes += 1
        if error is not None:
            result.probe_failures += 1
            if len(result.failure_examples) < 5:
                result.failure_examples.append(error)

    while not stop.is_set():
        task = asyncio.ensure_future(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / rate)
    if pending:
        await asyncio.wait(pending)
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        result.probe_p50_ms = statistics.median(ms)
        result.probe_p99_ms = ms[min(len(ms) - 1, int(len(ms) * 0.99))]


async def run_attack(port: int, proxy: str, attack: str, args: argparse.Namespace) -> AttackResult:
    result = AttackResult(proxy, attack, args.connections, args.attack_duration)
    stop = asyncio.Event()
    attackers = [
        asyncio.ensure_future(_attacker(port, attack, args.interval, result, stop))
        for _ in range(args.connections)
    ]
    await asyncio.sleep(min(1.0, args.attack_duration / 4))  # let the attack build up first
    prober = asyncio.ensure_future(_probe(port, args.probe_rate, result, stop))
    await asyncio.sleep(args.attack_duration)
    stop.set()
    await asyncio.gather(prober, *attackers)
    return result


# -- main ----------------------------------------------------------------------------------------


def _limits(timeout: float) -> tuple[list[str], str]:
    t = f"{timeout:g}"
    minirouter = ["--header-timeout", t, "--body-timeout", t, "--send-timeout", t]
    nginx = f"""\
        client_header_timeout {t}s;
        client_body_timeout {t}s;
        send_timeout {t}s;"""
    return minirouter, nginx


def print_table(results: Sequence[AttackResult]) -> None:
    print(
        f"{'proxy':<11} {'attack':<10} {'conns':>5} {'opened':>6} {'cut':>5} "
        f"{'probes':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for r in results:
        print(
            f"{r.proxy:<11} {r.attack:<10} {r.connections:>5} {r.attack_opened:>6} "
            f"{r.attack_cut:>5} {r.probes:>6} {r.probe_failures:>6} "
            f"{r.probe_p50_ms:>7.2f} {r.probe_p99_ms:>7.2f}"
        )
        for example in r.failure_examples:
            print(f"    failed probe: {example}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--connections", type=int, default=300, help="attack connections per attack")
    p.add_argument("--attack-duration", type=float, default=10.0, help="seconds of each attack")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between slow sends/reads")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="header/body/send timeout of both proxies"
    )
    p.add_argument("--probe-rate", type=float, default=20.0, help="probe requests per second")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--only", choices=PROXIES, help="attack one proxy only")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="20 connections, 1.5 s per attack; exit 1 on a failed probe",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument(
        "--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary"
    )
    p.add_argument("--minirouter-cmd", help="command that runs minirouter (default: this Python)")
    args = p.parse_args(argv)
    if args.smoke:
        args.connections, args.attack_duration, args.interval, args.timeout = 20, 1.5, 0.3, 1.0
        args.probe_rate = 10.0
    return args


def run(args: argparse.Namespace) -> int:
    proxies = [args.only] if args.only else list(PROXIES)
    mr_args, nginx_directives = _limits(args.timeout)
    results: list[AttackResult] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="minirouter-slow-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        _, up_port = start_upstream(args.nginx, tmp, stack)
        for name in proxies:
            _, port = start_proxy(
                name,
                tmp,
                stack,
                nginx=args.nginx,
                minirouter_cmd=args.minirouter_cmd,
                upstream_port=up_port,
                minirouter_args=mr_args,
                nginx_directives=nginx_directives,
            )
            for attack in args.attacks:
                results.append(asyncio.run(run_attack(port, name, attack, args)))
    print(
        f"\n{args.connections} attack connections per attack, {args.attack_duration:g} s each, "
        f"slow step every {args.interval:g} s, proxy timeouts {args.timeout:g} s, "
        f"probe {args.probe_rate:g} req/s on new connections "
        f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs: latencies are noisy)"
    )
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=2) + "\n")
    failed = [r for r in results if r.probe_failures or not r.probes]
    if args.smoke:
        if failed:
            print("SMOKE FAILED: probes failed under attack", file=sys.stderr)
            return 1
        print("smoke ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("slow_clients", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
