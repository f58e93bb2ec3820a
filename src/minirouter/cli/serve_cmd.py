"""`minirouter control` (the control plane alone) and `minirouter up` (everything on one host).

`up` runs the core and the control plane as two child processes (``python -m minirouter core``
and ``... control``) on one store, each in its own session: a Ctrl-C reaches `up` only, which
stops them with SIGTERM, in order, and waits for them. On Linux each child also gets SIGTERM if
`up` itself dies (PR_SET_PDEATHSIG), so nothing is left behind. The optional demo upstream is a
tiny HTTP server on a thread of `up`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import http.client
import http.server
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar, cast

import click

from minirouter.cli import _common, main
from minirouter.config import format_address, parse_address
from minirouter.control.accounts import AccountExists, Accounts
from minirouter.model import KINDS, from_dict, to_dict
from minirouter.store import Change, Store, StoreError, StoreUnavailable
from minirouter.store.base import redact_url

from ._common import CliError, CliUsageError, actor, connect, store_option

Address = tuple[str, int]
_F = TypeVar("_F", bound=Callable[..., Any])

STARTUP_TIMEOUT = 30.0  # seconds for both children to answer
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before a child is killed
CORE_SHUTDOWN_TIMEOUT = 3.0  # the core's --shutdown-timeout under `up`: requests in flight
LAST_LINES = 20  # of a child's output, shown when it dies
DEMO_ID = "demo"
DEMO_PRIORITY = -1000  # any route of the operator's wins over the demo's catch-all


def _address(_ctx: click.Context, param: click.Parameter, value: str | None) -> Address | None:
    if value is None:
        return None
    try:
        return parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _address_option(
    name: str, default: str, help: str, dest: str | None = None
) -> Callable[[_F], _F]:
    decls = [name] if dest is None else [name, dest]
    return click.option(
        *decls,
        default=default,
        show_default=True,
        metavar="HOST:PORT",
        callback=_address,
        help=help,
    )


def _need_control_extra() -> None:
    missing = [m for m in ("flask", "waitress") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            f"the control plane needs {' and '.join(missing)}: pip install 'minirouter[control]'"
        )


def _connect_host(host: str) -> str:
    """Where to connect to reach a server listening on `host` (wildcards: this host)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _url(address: Address, path: str = "/") -> str:
    host, port = address
    return f"http://{format_address(_connect_host(host), port)}{path}"


# -- minirouter control ---------------------------------------------------------------------------


@main.command("control")
@store_option
@_address_option(
    "--listen", "127.0.0.1:5000", "Where to serve the API (and the GUI); port 0 picks a free one."
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=8,
    show_default=True,
    help="Requests served at the same time (waitress worker threads).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def control_cmd(store_url: str | None, listen: Address, threads: int, log_level: str) -> None:
    """Run the control plane alone: the API and the GUI.

    The REST API (/api/v1) and the browser GUI (/) over the config store, for the operators.
    Served by waitress (a production WSGI server) until SIGTERM or Ctrl-C, which finish the
    requests in progress and exit 0. The accounts it accepts are managed with `minirouter user`
    and `minirouter token`. Run it next to the cores (`minirouter core --store URL`) on the
    same store; put a TLS-terminating proxy in front of it when it is reached from elsewhere.

    \b
      minirouter control --store redis://10.0.0.2:6379/0 --listen 127.0.0.1:5000
      curl http://127.0.0.1:5000/api/v1/openapi.json

    A port that is taken or a store that cannot be reached is reported in one line (exit 1).
    """
    _need_control_extra()
    url = _common.store_url(store_url)
    with connect(url) as store:
        store.current_rev()  # reachable and usable, or a one-line error now
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    from minirouter.control import serve

    host, port = listen
    listening = False

    def ready(_host: str, _port: int) -> None:
        nonlocal listening
        listening = True

    try:
        serve(url, host, port, threads=threads, ready=ready)
    except OSError as exc:
        if listening:
            raise
        raise CliError(
            f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}"
        ) from None
    except StoreUnavailable as exc:
        if listening:
            raise
        raise CliError(_common.unreachable_message(url, exc)) from None
    except StoreError as exc:
        if listening:
            raise
        raise CliError(str(exc)) from None


# -- the demo upstream ----------------------------------------------------------------------------

_DEMO_TEXT = """\
Hello from minirouter!

This answer comes from the DEMO upstream that `minirouter up` serves on {address}: a tiny
built-in server for trying the router out, not a real service. The router's route 'demo'
(path /, any host, priority {priority}) sent your request here.

What the demo upstream received:
  {request_line}
{headers}
Next: put your own service behind the router, e.g.
  minirouter upstream add app --target 127.0.0.1:3000
  minirouter route add app --path /app/ --strip-prefix --upstream app
and remove the demo with: minirouter route rm demo && minirouter upstream rm demo
"""
_MAX_DEMO_BODY = 1024 * 1024


class _DemoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with a page that says what it is and echoes the request head."""

    protocol_version = "HTTP/1.1"
    server_version = "minirouter-demo"
    sys_version = ""
    timeout = 120  # an idle pooled connection of the core

    def _answer(self, *, with_body: bool = True) -> None:
        length = self.headers.get("Content-Length", "")
        if self.headers.get("Transfer-Encoding") or not (length or "0").isdigit():
            self.close_connection = True  # not worth parsing: answer, then close
        elif int(length or 0) > _MAX_DEMO_BODY:
            self.close_connection = True
        elif length:
            self.rfile.read(int(length))
        headers = "".join(f"  {name}: {value}\n" for name, value in self.headers.items())
        body = _DEMO_TEXT.format(
            address=format_address(*cast(_DemoServer, self.server).address),
            priority=DEMO_PRIORITY,
            request_line=self.requestline,
            headers=headers,
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_OPTIONS(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the core's access log already has a line for each request."""


class _DemoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up the exit
    address: Address = ("", 0)  # as given to `up`


class _DemoServer6(_DemoServer):
    address_family = socket.AF_INET6


def _demo_server(address: Address) -> _DemoServer:
    """The demo upstream, bound (not serving yet); CliError if it cannot listen."""
    host, port = address
    cls = _DemoServer6 if ":" in host else _DemoServer
    try:
        server = cls((host, port), _DemoHandler)
    except OSError as exc:
        raise CliError(
            f"cannot serve the demo upstream on {format_address(host, port)}: "
            f"{exc.strerror or exc} (choose another --demo-upstream, or --no-demo)"
        ) from None
    server.address = address
    return server


# -- minirouter up --------------------------------------------------------------------------------


@dataclass
class _Child:
    """A child process of `up`, and the tail of what it printed."""

    name: str  # in front of each line of its output
    title: str  # in messages
    proc: subprocess.Popen[bytes]
    lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LAST_LINES)
    )
    pump: threading.Thread | None = None

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


class _Output:
    """Whole lines to stdout / stderr from several threads; a closed pipe is not an error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def echo(self, text: str, *, err: bool = False) -> None:
        with self.lock, contextlib.suppress(OSError, ValueError):
            click.echo(text, err=err)


def _pump(child: _Child, output: _Output, colour: str) -> None:
    """Copy a child's output, line by line with its name in front; keep its last lines."""
    prefix = click.style(f"{child.name:<7} | ", fg=colour)
    stream = child.proc.stdout
    assert stream is not None
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            child.lines.append(line)
            output.echo(prefix + line)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the child get SIGTERM when `up` dies (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)
        if os.getppid() != parent:  # `up` died before that took effect
            os.kill(os.getpid(), sigterm)

    return preexec


def _envvar(command: str, option: str) -> str:
    """The environment variable that gives `minirouter COMMAND` its OPTION.

    The store URL goes to the children in their environment, not on their command line, where
    any user of the host could read a password in it (`ps`).
    """
    for param in main.commands[command].params:
        if isinstance(param, click.Option) and option in param.opts:
            if isinstance(param.envvar, str):
                return param.envvar
            if isinstance(param.envvar, list | tuple) and param.envvar:
                return str(param.envvar[0])
            return f"MINIROUTER_{command.upper()}_{(param.name or '').upper()}"
    raise AssertionError(f"`minirouter {command}` has no {option} option")


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "minirouter", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C on the terminal reaches `up` only
        preexec_fn=_die_with_parent(),  # safe: `up` starts no thread before its children
    )


def _check_free(addresses: dict[str, Address]) -> None:
    """CliError naming the first address that cannot be listened on."""
    held: list[socket.socket] = []
    try:
        for what, (host, port) in addresses.items():
            where = format_address(host, port)
            try:
                info = socket.getaddrinfo(
                    host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                sock = socket.socket(info[0], info[1], info[2])
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(info[4])
            except OSError as exc:
                raise CliError(
                    f"cannot listen on {where} ({what}): {exc.strerror or exc}"
                ) from None
    finally:
        for sock in held:
            sock.close()


def _http_get(address: Address, path: str) -> tuple[int, bytes] | None:
    host, port = address
    conn = http.client.HTTPConnection(_connect_host(host), port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _core_ready(admin: Address) -> bool:
    """Whether the core answers on its admin listener (it binds the proxy's listener first).

    Any worker's answer will do (MINIROUTER_CORE_WORKERS may give it several); the port was
    free a moment before the core started, and a core that cannot bind it exits at once.
    """
    answer = _http_get(admin, "/healthz")
    if answer is None or answer[0] != 200:
        return False
    try:
        return "revision" in json.loads(answer[1])
    except (ValueError, TypeError):
        return False


def _control_ready(control: Address) -> bool:
    answer = _http_get(control, "/api/v1/openapi.json")
    return answer is not None and answer[0] == 200


def _demo_plan(store: Store, demo: bool | None, address: Address) -> tuple[bool, list[Change]]:
    """Whether `up` serves the demo upstream, and the writes that put the demo in the store.

    --demo: the upstream and route `demo` are written (unless stored as they are already).
    Default: the same into an empty store; into one that holds config, nothing, and the demo
    server runs only if an earlier `up` left the upstream `demo` pointing at it.
    """
    if demo is False:
        return False, []
    config = store.snapshot().config
    upstream = from_dict("upstreams", {"id": DEMO_ID, "targets": [format_address(*address)]})
    route = from_dict(
        "routes", {"id": DEMO_ID, "path": "/", "upstream": DEMO_ID, "priority": DEMO_PRIORITY}
    )
    stored_upstream = next((u for u in config.upstreams if u.id == DEMO_ID), None)
    stored_route = next((r for r in config.routes if r.id == DEMO_ID), None)
    if demo is None and any(getattr(config, kind) for kind in KINDS):
        serve = stored_upstream is not None and any(
            t.address == upstream.targets[0].address for t in stored_upstream.targets
        )
        return serve, []
    changes = [
        Change.put(new)
        for new, old in ((upstream, stored_upstream), (route, stored_route))
        if old is None or to_dict(old) != to_dict(new)
    ]
    return True, changes


def _new_password() -> str:
    """20 letters and digits (119 bits): copied with a double click, typed without doubt."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


def _ensure_admin(store: Store) -> tuple[str, str] | None:
    """Create an admin user if the store has none: (name, password), else None."""
    accounts = Accounts(store)
    if any(user.get("role") == "admin" for user in accounts.users()):
        return None
    password = _new_password()
    for name in ("admin", *(f"admin{i}" for i in range(2, 100))):
        try:
            accounts.create_user(name, "admin", password, by=actor())
        except AccountExists:  # a user "admin" of another role
            continue
        return name, password
    raise CliError("cannot create an admin user: the names admin, admin2, ... are all taken")


@contextlib.contextmanager
def _signals(stop: threading.Event, force: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM / SIGHUP set `stop`; a second one sets `force`."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        (force if stop.is_set() else stop).set()

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_children(children: list[_Child], force: threading.Event) -> list[_Child]:
    """SIGTERM to every child still running, SIGKILL to those still there after STOP_TIMEOUT
    (or at once on a second Ctrl-C); the ones that had to be killed."""
    for child in children:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while (
        any(c.proc.poll() is None for c in children)
        and time.monotonic() < deadline
        and not force.is_set()
    ):
        time.sleep(0.05)
    killed = [c for c in children if c.proc.poll() is None]
    for child in killed:
        child.proc.kill()
    for child in children:
        child.proc.wait()
        if child.pump is not None:
            child.pump.join(timeout=2)
    return killed


def _banner(
    listen: Address,
    control: Address,
    admin: Address,
    store_url: str,
    demo: Address | None,
    first_admin: tuple[str, str] | None,
) -> str:
    lines = [
        "",
        click.style("minirouter is up.", bold=True),
        f"  proxy:    {_url(listen)}",
        f"  control:  {_url(control, '/api/v1')}  (REST API; OpenAPI document at "
        f"{_url(control, '/api/v1/openapi.json')})",
    ]
    if importlib.util.find_spec("minirouter.control.gui") is not None:
        lines.append(f"  GUI:      {_url(control)}  (log in with a user of `minirouter user`)")
    lines += [
        f"  metrics:  {_url(admin, '/metrics')}  (health: {_url(admin, '/healthz')})",
        f"  store:    {redact_url(store_url)}",
    ]
    if demo is not None:
        lines += [
            f"  demo:     route 'demo' (path /) -> upstream 'demo' -> {format_address(*demo)}, "
            "a DEMO server built into `minirouter up`",
            f"            (not a real service).  Try:  curl {_url(listen)}",
        ]
    if first_admin is not None:
        name, password = first_admin
        lines += [
            "",
            click.style(
                "  Created the first admin user. Its password is shown only this once: keep it.",
                fg="yellow",
                bold=True,
            ),
            f"    user:     {name}",
            f"    password: {password}",
            f"  (change it with `minirouter user passwd {name}`)",
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


@main.command("up")
@store_option
@_address_option("--listen", "127.0.0.1:8080", "Where the proxy (the core) serves HTTP.")
@_address_option(
    "--control",
    "127.0.0.1:5000",
    "Where the control plane serves the API (and the GUI).",
    dest="control_addr",
)
@_address_option("--admin", "127.0.0.1:9090", "Where the core serves /metrics and /healthz.")
@click.option(
    "--demo/--no-demo",
    default=None,
    help="Add the demo: upstream and route 'demo' (path /, lowest priority) and a demo server "
    "on --demo-upstream. Default: on when the store holds no config yet (and kept on while "
    "the stored upstream 'demo' points at the demo server).",
)
@_address_option(
    "--demo-upstream",
    "127.0.0.1:9001",
    "Where the built-in demo server listens (from this process).",
)
def up_cmd(
    store_url: str | None,
    listen: Address,
    control_addr: Address,
    admin: Address,
    demo: bool | None,
    demo_upstream: Address,
) -> None:
    """Run a core and the control plane on this host, until Ctrl-C.

    The quickest start: with no --store it uses the embedded SQLite store of this user
    ($XDG_STATE_HOME/minirouter/store.db), so it needs no server. Prints the proxy, API and
    metrics addresses. The core follows the store: changes made with the API or with
    `minirouter route ...` (any shell, same store) reach it at once.

    If the store has no admin user, one named `admin` is created with a random password,
    printed this once. On an empty store a demo route answers on the proxy
    (`curl http://127.0.0.1:8080/`) from a demo server built into this command.

    Both parts run as child processes whose output is shown prefixed with their name.
    Ctrl-C or SIGTERM stops both (a second Ctrl-C kills them at once); if one of them stops
    on its own, `up` stops the other and exits 1, showing the last lines it printed.

    \b
      minirouter up
      minirouter up --store redis://127.0.0.1:6379/0 --listen 0.0.0.0:80 --no-demo
    """
    addresses = {
        "the proxy, --listen": listen,
        "the control plane, --control": control_addr,
        "metrics, --admin": admin,
    }
    seen: dict[Address, str] = {}
    for what, address in addresses.items():
        if address[1] == 0:
            raise CliUsageError(f"{what.split(', ')[1]}: give a port (`up` cannot use port 0)")
        if address in seen:
            raise CliUsageError(
                f"{what.split(', ')[1]} and {seen[address]} are the same address "
                f"{format_address(*address)}"
            )
        seen[address] = what.split(", ")[1]
    _need_control_extra()
    url = _common.store_url(store_url)

    with connect(url) as store:
        store.current_rev()  # reachable, or a one-line error before anything else
        serve_demo, demo_changes = _demo_plan(store, demo, demo_upstream)
        if serve_demo and demo_upstream in seen:
            raise CliUsageError(
                f"--demo-upstream {format_address(*demo_upstream)} is the address of "
                f"{seen[demo_upstream]}"
            )
        _check_free(addresses)
        demo_server = _demo_server(demo_upstream) if serve_demo else None
        try:
            if demo_changes:
                store.apply(demo_changes, actor=actor())
        except BaseException:
            if demo_server is not None:
                demo_server.server_close()
            raise

    env = dict(os.environ)
    env.pop(_envvar("core", "--config"), None)  # the core follows the store, not a file
    env |= {"PYTHONUNBUFFERED": "1", _envvar("core", "--store"): url}
    env[_envvar("control", "--store")] = url
    core_args = ["core", "--listen", format_address(*listen), "--admin", format_address(*admin)]
    core_args += ["--shutdown-timeout", str(CORE_SHUTDOWN_TIMEOUT)]
    control_args = ["control", "--listen", format_address(*control_addr)]

    output = _Output()
    stop, force = threading.Event(), threading.Event()
    children: list[_Child] = []
    failed: _Child | None = None
    demo_thread: threading.Thread | None = None
    try:
        with _signals(stop, force):
            try:
                # Both children before any thread of ours starts (fork + preexec_fn).
                children.append(_Child("core", "core", _spawn(core_args, env)))
                children.append(_Child("control", "control plane", _spawn(control_args, env)))
                for child, colour in zip(children, ("cyan", "magenta"), strict=True):
                    child.pump = threading.Thread(
                        target=_pump, args=(child, output, colour), daemon=True
                    )
                    child.pump.start()
                if demo_server is not None:
                    demo_thread = threading.Thread(
                        target=demo_server.serve_forever, kwargs={"poll_interval": 0.2}
                    )
                    demo_thread.start()
                failed = _run(children, output, stop, listen, control_addr, admin, url, demo_server)
            finally:
                killed = _stop_children(children, force)
    finally:
        if demo_server is not None:
            if demo_thread is not None:
                demo_server.shutdown()
                demo_thread.join()
            demo_server.server_close()
    if failed is not None:
        output.echo(
            f"minirouter: the {failed.title} stopped unexpectedly ({failed.describe_exit()}); "
            "its last lines:",
            err=True,
        )
        for line in failed.lines:
            output.echo(f"  {failed.name} | {line}", err=True)
        others = " and the ".join(c.title for c in children if c is not failed)
        raise CliError(
            f"the {failed.title} stopped ({failed.describe_exit()}), so `up` stopped the {others}"
        )
    if killed:
        names = " and the ".join(c.title for c in killed)
        raise CliError(f"killed the {names}: it did not stop within {STOP_TIMEOUT:g} s")
    output.echo("minirouter: stopped.", err=True)


def _run(
    children: list[_Child],
    output: _Output,
    stop: threading.Event,
    listen: Address,
    control: Address,
    admin: Address,
    url: str,
    demo_server: _DemoServer | None,
) -> _Child | None:
    """Wait for both children to answer, print the banner, then watch them until `stop`.

    The child that exited on its own, if one did.
    """
    waiting: dict[str, Callable[[], bool]] = {
        "core": lambda: _core_ready(admin),
        "control": lambda: _control_ready(control),
    }
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while waiting:
        for child in children:
            if child.proc.poll() is not None:
                return child
        if stop.is_set():
            return None
        for name, ready in list(waiting.items()):
            if ready():
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            names = " and the ".join(waiting)
            raise CliError(f"the {names} did not answer within {STARTUP_TIMEOUT:g} s")
        if waiting:
            stop.wait(0.1)

    with connect(url) as store:
        first_admin = _ensure_admin(store)
    demo = demo_server.address if demo_server is not None else None
    output.echo(_banner(listen, control, admin, url, demo, first_admin))

    while not stop.wait(0.2):
        for child in children:
            if child.proc.poll() is not None:
                return child
    output.echo("minirouter: stopping (Ctrl-C again to kill at once) ...", err=True)
    return None
