#!/usr/bin/env python3
"""End-to-end TLS comparison: minirouter vs nginx terminating TLS, and L4 throughput vs direct.

One fast upstream (nginx answering ``return 200``, from ``e2e_load.py``) runs on 127.0.0.1. In
turn each proxy terminates TLS in front of it with the same certificate (ECDSA P-256, made at
start with ``cryptography``), pinned to one CPU, and ``wrk`` measures:

* ``handshakes/s``: ``wrk -H "Connection: close"``: one full TLS handshake per request;
* ``https req/s``: keep-alive requests over established TLS connections.

nginx: ``listen ssl``, ``ssl_protocols TLSv1.2 TLSv1.3``, the same ``proxy_pass`` as
``e2e_load.py``. minirouter: ``minirouter core --listen-tls`` with the certificate in its config
(marked ``default: true``: wrk connects to an IP address).

Then L4: a TCP source streams bytes as fast as it can; a client reads ``--l4-mb`` MB of it
directly and through a minirouter L4 listener, and prints MB/s for each.

    python benchmarks/e2e_tls.py                  # 5 s per run, 50 connections
    python benchmarks/e2e_tls.py --smoke          # 1 s, 4 connections, 64 MB of L4: a sanity run
    python benchmarks/e2e_tls.py --json out.json

Numbers from a shared 2-core machine are noisy: the proxy gets CPU 0 (``taskset``); wrk, the
upstream and the L4 client share CPU 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling script, imported from its directory (the path is set just above).
from e2e_load import (
    UPSTREAM_BODY,
    BenchError,
    Server,
    cpu_seconds,
    free_port,
    minirouter_base_cmd,
    nginx_cmd,
    nginx_proxy_conf,
    parse_wrk,
    pinned,
    script_main,
    start_server,
    start_upstream,
)

PROXIES = ("nginx", "minirouter")
READY_TIMEOUT = 30.0
WRK_GRACE = 30.0
CHUNK = 1 << 20


# -- certificate --------------------------------------------------------------------------------


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for bench.test and 127.0.0.1: (cert, key) files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("bench.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- proxies ------------------------------------------------------------------------------------


def wait_ready_tls(server: Server, port: int, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``GET /`` over TLS until it answers with the upstream's body."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited; log:\n{server.log_tail()}")
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname="bench.test") as sock,
            ):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200") and data.endswith(UPSTREAM_BODY.encode()):
                return
            last = repr(data[:80])
        except (OSError, ssl.SSLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise BenchError(f"{server.name} not ready over TLS ({last}); log:\n{server.log_tail()}")


def start_nginx_tls(
    nginx: str, tmp: Path, stack: contextlib.ExitStack, cert: tuple[Path, Path], up: int, cpus: str
) -> tuple[Server, int]:
    workdir = tmp / "nginx"
    workdir.mkdir()
    port = free_port()
    # The same proxy as e2e_load.py's, with TLS on its listener.
    conf = nginx_proxy_conf(
        workdir,
        port,
        up,
        directives=f"""\
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        ssl_protocols TLSv1.2 TLSv1.3;""",
        listen_options="ssl",
    )
    server = start_server("nginx", pinned(nginx_cmd(nginx, workdir, conf), cpus), workdir, stack)
    wait_ready_tls(server, port)
    return server, port


def start_minirouter(
    base_cmd: list[str],
    tmp: Path,
    stack: contextlib.ExitStack,
    cert: tuple[Path, Path],
    up: int,
    source: int,
    cpus: str,
) -> tuple[Server, int, int]:
    """minirouter with an HTTPS listener and an L4 listener to `source`: (server, tls, l4)."""
    workdir = tmp / "minirouter"
    workdir.mkdir()
    port, tls_port, l4_port = free_port(), free_port(), free_port()
    config = {
        "upstreams": [
            {"id": "app", "targets": [f"127.0.0.1:{up}"], "keepalive": 64},
            {"id": "source", "targets": [f"127.0.0.1:{source}"]},
        ],
        "routes": [{"id": "all", "path": "/", "upstream": "app"}],
        "listeners": [{"id": "l4", "listen": f"127.0.0.1:{l4_port}", "upstream": "source"}],
        "certificates": [
            {
                "id": "bench",
                "names": ["bench.test"],
                "cert": cert[0].read_text(),
                "key": cert[1].read_text(),
                "default": True,
            }
        ],
    }
    conf = workdir / "minirouter.yaml"
    conf.write_text(json.dumps(config, indent=2))
    conf.chmod(0o600)
    cmd = [
        *base_cmd,
        "core",
        "--config",
        str(conf),
        "--listen",
        f"127.0.0.1:{port}",
        "--listen-tls",
        f"127.0.0.1:{tls_port}",
        "--access-log",
        "off",
        "--workers",
        "1",
    ]
    env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "HOME": str(workdir)}
    server = start_server("minirouter", pinned(cmd, cpus), workdir, stack, env)
    wait_ready_tls(server, tls_port)
    return server, tls_port, l4_port


# -- wrk ----------------------------------------------------------------------------------------


@dataclass
class TlsResult:
    proxy: str
    handshakes_per_s: float
    handshake_errors: int
    https_rps: float
    https_p99_ms: float
    https_errors: int
    cpu_us_per_handshake: float
    cpu_us_per_request: float


def wrk(args: argparse.Namespace, port: int, close: bool, cpus: str) -> tuple[float, float, int]:
    """One wrk run: (requests/s, p99 ms, errors)."""
    cmd = [args.wrk, "-t1", f"-c{args.connections}", f"-d{max(1, round(args.duration))}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd += ["--latency", f"https://127.0.0.1:{port}/"]
    done = subprocess.run(
        pinned(cmd, cpus),
        capture_output=True,
        text=True,
        timeout=args.duration + WRK_GRACE,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    res = parse_wrk(done.stdout)
    # With Connection: close, wrk counts each server-side close as a read error: not an error.
    errors = res.non_2xx_3xx + res.socket_errors["connect"] + res.socket_errors["timeout"]
    if not close:
        errors += res.socket_errors["read"] + res.socket_errors["write"]
    return res.rps, res.p99_ms, errors


def measure(name: str, server: Server, port: int, args: argparse.Namespace, cpus: str) -> TlsResult:
    rates: dict[bool, tuple[float, float, int, float]] = {}
    for close in (True, False):
        before = cpu_seconds(server.tree())
        rps, p99, errors = wrk(args, port, close, cpus)
        after = cpu_seconds(server.tree())
        cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
        rates[close] = (rps, p99, errors, cpu / max(1.0, rps * args.duration) * 1e6)
    return TlsResult(
        proxy=name,
        handshakes_per_s=rates[True][0],
        handshake_errors=rates[True][2],
        https_rps=rates[False][0],
        https_p99_ms=rates[False][1],
        https_errors=rates[False][2],
        cpu_us_per_handshake=rates[True][3],
        cpu_us_per_request=rates[False][3],
    )


# -- L4 -----------------------------------------------------------------------------------------


def serve_source(port_holder: list[int], stop: threading.Event) -> None:
    """A TCP server streaming zeros to each client until it closes (in a thread)."""
    block = bytes(CHUNK)
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.settimeout(0.2)
        port_holder.append(srv.getsockname()[1])
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_stream, args=(conn, block), daemon=True).start()


def _stream(conn: socket.socket, block: bytes) -> None:
    with conn, contextlib.suppress(OSError):
        while True:
            conn.sendall(block)


def read_rate(port: int, total: int) -> float:
    """MB/s of reading `total` bytes from 127.0.0.1:port."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        got = 0
        start = time.perf_counter()
        while got < total:
            n = sock.recv_into(view)
            if n == 0:
                raise BenchError(f"the stream ended after {got} bytes")
            got += n
        elapsed = time.perf_counter() - start
    return total / elapsed / 1e6


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run")
    p.add_argument("--connections", type=int, default=50, help="wrk -c")
    p.add_argument("--l4-mb", type=int, default=2048, help="MB read per L4 measurement")
    p.add_argument("--proxy-cpus", default="0", help="taskset CPU list for the proxy")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for wrk and the upstream")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument("--smoke", action="store_true", help="1 s, 4 connections, 64 MB of L4")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--minirouter-cmd", help="command that runs the minirouter CLI")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.connections, args.l4_mb = 1.0, 4, 64
    if (os.cpu_count() or 1) < 2:
        args.proxy_cpus = args.client_cpus = "0"
    return args


def run(args: argparse.Namespace) -> int:
    results: dict[str, TlsResult] = {}
    l4: dict[str, float] = {}
    stop = threading.Event()
    holder: list[int] = []
    source = threading.Thread(target=serve_source, args=(holder, stop), daemon=True)
    source.start()
    with (
        tempfile.TemporaryDirectory(prefix="minirouter-tls-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        stack.callback(stop.set)
        tmp = Path(tmp_name)
        cert = make_certificate(tmp)
        _, up_port = start_upstream(args.nginx, tmp, stack, args.client_cpus)
        while not holder:
            time.sleep(0.01)
        with contextlib.ExitStack() as proxy:
            server, port = start_nginx_tls(args.nginx, tmp, proxy, cert, up_port, args.proxy_cpus)
            results["nginx"] = measure("nginx", server, port, args, args.client_cpus)
        with contextlib.ExitStack() as proxy:
            server, port, l4_port = start_minirouter(
                minirouter_base_cmd(args.minirouter_cmd),
                tmp,
                proxy,
                cert,
                up_port,
                holder[0],
                args.proxy_cpus,
            )
            results["minirouter"] = measure("minirouter", server, port, args, args.client_cpus)
            total = args.l4_mb * 1_000_000
            l4["direct"] = read_rate(holder[0], total)
            l4["minirouter"] = read_rate(l4_port, total)
    print(
        f"{'proxy':<12}{'handshakes/s':>14}{'cpu us/hs':>11}{'https req/s':>13}"
        f"{'p99 ms':>9}{'cpu us/req':>12}{'errors':>8}"
    )
    for r in results.values():
        print(
            f"{r.proxy:<12}{r.handshakes_per_s:>14.0f}{r.cpu_us_per_handshake:>11.0f}"
            f"{r.https_rps:>13.0f}{r.https_p99_ms:>9.2f}{r.cpu_us_per_request:>12.0f}"
            f"{r.handshake_errors + r.https_errors:>8}"
        )
    m, n = results["minirouter"], results["nginx"]
    print(
        f"{'mr/nginx':<12}{m.handshakes_per_s / max(n.handshakes_per_s, 1e-9):>14.2f}{'':>11}"
        f"{m.https_rps / max(n.https_rps, 1e-9):>13.2f}"
    )
    print(
        f"L4 MB/s     direct {l4['direct']:.0f}  minirouter {l4['minirouter']:.0f}  "
        f"ratio {l4['minirouter'] / l4['direct']:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"tls": [asdict(r) for r in results.values()], "l4_mb_per_s": l4}, indent=2)
        )
    errors = sum(r.handshake_errors + r.https_errors for r in results.values())
    served = all(r.handshakes_per_s > 0 and r.https_rps > 0 for r in results.values())
    if args.smoke:
        ok = errors == 0 and served and l4["minirouter"] > 0
        print("smoke ok" if ok else "smoke FAILED")
        return 0 if ok else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("e2e_tls", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
