"""Run `minirouter core` as a real subprocess and talk to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

from .upstreams import free_port

T = TypeVar("T")

READY_TIMEOUT = 10.0


def core_command() -> list[str]:
    """The `minirouter` console script next to this interpreter, else `python -m minirouter`."""
    script = Path(sys.executable).parent / "minirouter"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "minirouter"]


def poll(
    fn: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call fn until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError, AssertionError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            raise AssertionError(
                f"timed out after {timeout}s waiting for {msg}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


def admin_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format → [(name, labels, value)] (comments skipped)."""
    out: list[tuple[str, dict[str, str], float]] = []
    line_re = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise AssertionError(f"unparseable metrics line: {line!r}")
        labels = dict(label_re.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_sum(metrics: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v
        for n, lab, v in metrics
        if n == name and all(lab.get(k) == want for k, want in labels.items())
    )


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


class CoreProcess:
    """One `minirouter core` subprocess with its config file and captured output."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | str,
        args: Sequence[str] = (),
        *,
        admin: bool = True,
        workers: int | None = None,
        listen_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "minirouter.yaml"
        self.write_config(config, atomic=False)
        self._spawn(
            ["--config", str(self.config_path)],
            args,
            admin=admin,
            workers=workers,
            listen_port=listen_port,
            env=env,
        )

    def _spawn(
        self,
        source: Sequence[str],
        args: Sequence[str],
        *,
        admin: bool,
        workers: int | None,
        listen_port: int | None,
        env: dict[str, str] | None,
    ) -> None:
        """Start the core with `source` (`--config FILE` or `--store URL ...`) and `args`."""
        workdir = self.workdir
        self.port = listen_port or free_port()
        self.workers = workers or 1
        self.admin_port: int | None = None
        if admin:
            self.admin_port = self._free_port_run(self.workers)
        self.stdout_path = workdir / "core.stdout"
        self.stderr_path = workdir / "core.stderr"
        cmd = [
            *core_command(),
            "core",
            *source,
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        if self.admin_port is not None:
            cmd += ["--admin", f"127.0.0.1:{self.admin_port}"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += list(args)
        self.cmd = cmd
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in stop()
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=workdir,
            start_new_session=True,
        )
        self._known_pids: set[int] = {self.proc.pid}
        self.stopped = False

    @staticmethod
    def _free_port_run(n: int) -> int:
        """A base port such that base .. base+n-1 are all free right now.

        A single port comes from the kernel (bind to port 0). A run of several is picked below the
        ephemeral range, where ports in TIME_WAIT from earlier client connections do not collide.
        """
        if n == 1:
            return free_port()
        rng = random.Random()
        for _ in range(500):
            base = rng.randrange(20000, 32000 - n)
            socks: list[socket.socket] = []
            try:
                for i in range(n):
                    s = socket.socket()
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", base + i))
                return base
            except OSError:
                continue
            finally:
                for s in socks:
                    s.close()
        raise RuntimeError("no free port run")

    # -- config ----------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any] | str, *, atomic: bool = True) -> None:
        text = config if isinstance(config, str) else dump_config(config)
        if atomic:
            tmp = self.config_path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.config_path)
        else:
            self.config_path.write_text(text)

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    # -- readiness / admin ---------------------------------------------------------------
    def admin_port_of(self, worker: int = 0) -> int:
        assert self.admin_port is not None, "core started without --admin"
        return self.admin_port + worker

    def healthz(self, worker: int = 0) -> dict[str, Any]:
        status, _, body = admin_get(self.admin_port_of(worker), "/healthz")
        assert status == 200, f"/healthz answered {status}: {body[:300]!r}"
        data = json.loads(body)
        assert isinstance(data, dict)
        return data

    def metrics_text(self, worker: int = 0) -> str:
        status, _, body = admin_get(self.admin_port_of(worker), "/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
        return body.decode()

    def metrics(self, worker: int = 0) -> list[tuple[str, dict[str, str], float]]:
        return parse_metrics(self.metrics_text(worker))

    def revision(self, worker: int = 0) -> int:
        return int(self.healthz(worker)["revision"])

    def wait_for_revision(self, rev: int, timeout: float = 10.0, worker: int = 0) -> None:
        poll(
            lambda: self.revision(worker) >= rev,
            timeout,
            message=lambda: f"config revision {rev} (diagnostics:\n{self.diagnostics()})",
        )

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"minirouter core exited early with code {self.proc.returncode}\n"
                f"command: {self.cmd}\n{self.diagnostics()}"
            )

    def _ready_once(self) -> bool:
        self._check_alive()
        if self.admin_port is not None:
            for i in range(self.workers):
                status, _, _ = admin_get(self.admin_port_of(i), "/healthz", timeout=2.0)
                if status != 200:
                    return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0):
            pass
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> CoreProcess:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._ready_once():
                    self._remember_children()
                    return self
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() >= deadline:
                self._check_alive()
                raise AssertionError(
                    f"minirouter core not ready after {timeout}s\ncommand: {self.cmd}\n"
                    f"{self.diagnostics()}"
                )
            time.sleep(0.05)

    # -- process -----------------------------------------------------------------------------
    def _remember_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._known_pids.add(child.pid)

    def processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def terminate(self) -> None:
        self._remember_children()
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL whatever is left (the process and any worker)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        code: int | None = None
        try:
            if self.proc.poll() is None:
                self._remember_children()
                self.proc.send_signal(signal.SIGTERM)
                code = self.wait(timeout)
            else:
                code = self.proc.returncode
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for pid in self._known_pids - {self.proc.pid}:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    p.kill()
                    p.wait(10)
            self._stdout.close()
            self._stderr.close()
        return code

    def leftover_processes(self) -> list[int]:
        alive = []
        for pid in self._known_pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        return alive

    # -- output ----------------------------------------------------------------------------
    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def diagnostics(self, limit: int = 4000) -> str:
        out = self.stdout_text()[-limit:]
        err = self.stderr_text()[-limit:]
        return (
            f"--- core pid {self.proc.pid} returncode {self.proc.poll()} cmd {' '.join(self.cmd)}\n"
            f"--- core stdout (tail) ---\n{out}\n--- core stderr (tail) ---\n{err}"
        )
