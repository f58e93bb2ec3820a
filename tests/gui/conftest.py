"""Fixtures for the browser tests: a running control plane, a running core and an upstream on
one SQLite store, and headless Debian chromium driven by Playwright's sync API.

Everything is real and local: `minirouter control` (or, until that command exists, the
package's own ``python -m minirouter.control.server``) and `minirouter core` as subprocesses,
an HTTP upstream in a thread, and every byte of traffic to 127.0.0.1. The servers are shared by
the module (starting them costs seconds); each test gets a fresh browser context (no cookies).
Every process is stopped at teardown, and the test fails if one is left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from minirouter.control import accounts
from minirouter.control.accounts import Accounts
from minirouter.store import Store, open_store

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless, with nothing that reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
READY_TIMEOUT = 20.0
ADMIN_PASSWORD = "admin password for the gui tests"
LAPTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
UPSTREAM_ANSWER = b"hello from the gui-test upstream"


# -- small helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `fn` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def cheap_kdf() -> Iterator[None]:
    """Hash passwords made in this process at a test-suite cost.

    Every stored hash carries its own scrypt parameters, so the control plane checks these
    with the same code, just fast; users added through the GUI get the production cost.
    """
    saved = accounts.KDF
    accounts.KDF = accounts.ScryptParams(n=16, r=1, p=1)
    try:
        yield
    finally:
        accounts.KDF = saved


# -- processes -------------------------------------------------------------------------------------


class Process:
    """A subprocess in a session of its own (so the whole group can be stopped), output to files."""

    def __init__(self, name: str, cmd: list[str], workdir: Path) -> None:
        self.name = name
        self.cmd = cmd
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "XDG_STATE_HOME": str(workdir / "state"),  # never the user's own state dir
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.proc.returncode}: {self.cmd}\n{self.log()}"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the id was reused by someone else's process
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL after `timeout`; reaps the child."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        # Workers of a core may outlive their parent for a moment.
        deadline = time.monotonic() + timeout
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def left_behind(self) -> bool:
        return self.proc.poll() is None or self._group_alive()


def control_command(store_url: str, port: int) -> list[str]:
    """`minirouter control` if this checkout has it, else the package's own server module."""
    from minirouter.cli import main

    if "control" in getattr(main, "commands", {}):
        listen = f"127.0.0.1:{port}"
        return [
            sys.executable,
            "-m",
            "minirouter",
            "control",
            "--store",
            store_url,
            "--listen",
            listen,
        ]
    return [sys.executable, "-m", "minirouter.control.server", store_url, "127.0.0.1", str(port)]


class Upstream(http.server.ThreadingHTTPServer):
    """An HTTP upstream on 127.0.0.1 that answers every GET with UPSTREAM_ANSWER."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.port: int = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, name="gui-upstream", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(UPSTREAM_ANSWER)))
        self.end_headers()
        self.wfile.write(UPSTREAM_ANSWER)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test output is for failures


@dataclass
class Stack:
    """The running system under test."""

    store_url: str
    base_url: str  # the control plane, e.g. http://127.0.0.1:5000
    core_port: int
    upstream_port: int
    control: Process
    core: Process
    screenshots: Path = SCREENSHOTS
    stores: list[Store] = field(default_factory=list)

    def store(self) -> Store:
        """A store client of the test's own (for setup and for "nothing was stored" checks)."""
        store = open_store(self.store_url)
        self.stores.append(store)
        return store

    def through_core(self, path: str, host: str) -> tuple[int, bytes]:
        """One request through the running core."""
        return http_get(self.core_port, path, host)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("gui")
    store_url = f"sqlite://{workdir / 'store.db'}"
    with open_store(store_url) as store, cheap_kdf():
        Accounts(store).create_user("admin", "admin", ADMIN_PASSWORD)
    upstream = Upstream()
    processes: list[Process] = []
    try:
        control_port = free_port()
        control = Process("control", control_command(store_url, control_port), workdir)
        processes.append(control)
        core_port, admin_port = free_port(), free_port()
        core = Process(
            "core",
            [
                *(sys.executable, "-m", "minirouter", "core", "--store", store_url),
                *("--listen", f"127.0.0.1:{core_port}", "--admin", f"127.0.0.1:{admin_port}"),
                *("--access-log", "off"),
            ],
            workdir,
        )
        processes.append(core)

        def ready(process: Process, port: int, path: str) -> bool:
            process.check_alive()
            return http_get(port, path)[0] == 200

        poll(lambda: ready(control, control_port, "/login"), READY_TIMEOUT, "the control plane")
        poll(lambda: ready(core, admin_port, "/healthz"), READY_TIMEOUT, "the core")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        running = Stack(
            store_url, f"http://127.0.0.1:{control_port}", core_port, upstream.port, control, core
        )
        yield running
        for opened in running.stores:
            opened.close()
    finally:
        for process in reversed(processes):
            process.stop()
        upstream.stop()
    left = [p.name for p in processes if p.left_behind()]
    assert not left, f"processes left behind: {left}"


# -- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian chromium is needed: apt-get install chromium"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Gui:
    """One browser context (its own cookies) on the control plane, with helpers."""

    context: BrowserContext
    page: Page
    stack: Stack
    prefix: str = "laptop"
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> Page:
        self.page.goto(self.stack.base_url + path)
        return self.page

    def login(self, name: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        page = self.go("/login")
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(self.stack.base_url + "/")

    def shot(self, name: str) -> Path:
        """A full-page screenshot into artifacts/screenshots/ (kept after the run)."""
        path = self.stack.screenshots / f"{self.prefix}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def confirm(self, label: str) -> None:
        """Answer the confirmation dialog with its button `label`."""
        dialog = self.page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name=label).click()


def _new_gui(browser: Browser, stack: Stack, viewport: dict[str, int], prefix: str) -> Gui:
    mobile = viewport is PHONE
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        is_mobile=mobile,
        has_touch=mobile,
        device_scale_factor=2 if mobile else 1,
        # Nothing but the control plane: a request anywhere else fails the test.
        service_workers="block",
    )
    context.set_default_timeout(10_000)
    context.route("**/*", _local_only(stack.base_url))
    page = context.new_page()
    gui = Gui(context, page, stack, prefix)
    # Script errors on any page fail the test (they would otherwise pass unseen).
    page.on("pageerror", lambda exc: gui.errors.append(str(exc)))
    return gui


def _local_only(base_url: str) -> Callable[[Route], None]:
    def handle(route: Route) -> None:
        url: str = route.request.url
        if url.startswith(base_url + "/") or url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    return handle


@pytest.fixture
def gui(browser: Browser, stack: Stack) -> Iterator[Gui]:
    """A laptop-sized browser context, logged out."""
    made = _new_gui(browser, stack, LAPTOP, "laptop")
    yield made
    made.context.close()
    assert not made.errors, f"JavaScript errors on the page: {made.errors}"


@pytest.fixture
def phone(browser: Browser, stack: Stack) -> Iterator[Gui]:
    """A phone-sized browser context, logged out."""
    made = _new_gui(browser, stack, PHONE, "phone")
    yield made
    made.context.close()
    assert not made.errors, f"JavaScript errors on the page: {made.errors}"
