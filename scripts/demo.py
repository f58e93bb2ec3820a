"""`make run`: a demo upstream and `minirouter core` in front of it, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTEN = os.environ.get("MINIROUTER_DEMO_LISTEN", "127.0.0.1:8080")
ADMIN = os.environ.get("MINIROUTER_DEMO_ADMIN", "127.0.0.1:9090")
UPSTREAM_PORT = 9001


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            body = f"hello from the demo upstream: {line}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
                % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def _upstream() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", UPSTREAM_PORT)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _wait_port(address: str, deadline: float) -> bool:
    host, port = address.rsplit(":", 1)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        # Ctrl-C reaches the whole process group; the parent reports, this one stays quiet.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _upstream()
        return 0
    upstream = subprocess.Popen([sys.executable, __file__, "upstream"])
    core = subprocess.Popen(
        [
            sys.executable, "-m", "minirouter", "core",
            "--config", str(ROOT / "examples" / "demo.yaml"),
            "--listen", LISTEN, "--admin", ADMIN,
        ]
    )  # fmt: skip
    try:
        if not _wait_port(LISTEN, time.monotonic() + 15):
            print("minirouter core did not start; see the messages above", file=sys.stderr)
            return 1
        print(
            f"\nminirouter is running.\n"
            f"  proxy:   http://{LISTEN}/   try: curl -i http://{LISTEN}/hello\n"
            f"  metrics: http://{ADMIN}/metrics   health: http://{ADMIN}/healthz\n"
            f"  config:  {ROOT / 'examples' / 'demo.yaml'} (edit it: the core reloads it)\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        core.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (core, upstream):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (core, upstream):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
