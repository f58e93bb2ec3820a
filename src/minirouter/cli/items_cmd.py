"""`minirouter route|upstream|listener|cert ls|show|add|rm|edit`: one item at a time.

The four groups share `ls`, `show`, `rm` and `edit`; each has its own `add`, which takes the
item from a file (`-f`) or, for the common fields, from flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import click

from minirouter.cli import _common, main
from minirouter.model import (
    BALANCES,
    PATH_TYPES,
    Certificate,
    Item,
    Listener,
    Route,
    Upstream,
    ValidationError,
    from_dict,
    to_dict,
)
from minirouter.store import Change, ConflictError, NotFoundError, Snapshot, Store

from ._common import (
    CliError,
    actor,
    complete_ids,
    connect,
    echo_json,
    json_option,
    store_option,
    table,
    to_yaml,
    warn_invalid,
)
from ._config import (
    FILE_ARG,
    Document,
    ItemChange,
    describe_errors,
    invalid_file,
    parse_document,
    read_document,
    render_change,
)

# How often a single-item write is retried when an unrelated change moved the revision.
_ATTEMPTS = 5
_HIDDEN_KEY = "<hidden: --show-key prints it>"
# The command group of each kind.
_GROUPS = {
    "routes": "route",
    "upstreams": "upstream",
    "listeners": "listener",
    "certificates": "cert",
}


# -- reading ------------------------------------------------------------------------------------


def _find(snap: Snapshot, kind: str, item_id: str) -> Item:
    """The item (kind, id) of a snapshot; CliError if it is missing or stored invalid."""
    for item in getattr(snap.config, kind):
        if item.id == item_id:
            found: Item = item
            return found
    noun = _common.NOUNS[kind]
    why = snap.invalid.get(f"{kind}/{item_id}")
    if why is not None:
        raise CliError(f"{noun} {item_id!r} is stored but invalid ({why}); replace it with apply")
    raise CliError(f"{noun} {item_id!r} does not exist")


def _exists(snap: Snapshot, kind: str, item_id: str) -> bool:
    return f"{kind}/{item_id}" in snap.invalid or any(
        item.id == item_id for item in getattr(snap.config, kind)
    )


def _users(snap: Snapshot) -> dict[str, list[str]]:
    """upstream id -> the routes and listeners that use it (``routes/a``)."""
    users: dict[str, list[str]] = {}
    for kind in ("routes", "listeners"):
        for item in getattr(snap.config, kind):
            if item.upstream is not None:
                users.setdefault(item.upstream, []).append(f"{kind}/{item.id}")
    return users


def _route_row(route: Route, _users: Mapping[str, list[str]]) -> list[str]:
    if route.redirect is not None:
        to = f"redirect {route.redirect.code} {route.redirect.to}"
    else:
        to = str(route.upstream)
    return [
        route.id,
        str(route.priority),
        ",".join(route.hosts) or "*",
        route.path,
        route.path_type,
        ",".join(route.methods) or "*",
        to,
        "yes" if route.enabled else "no",
    ]


def _upstream_row(upstream: Upstream, users: Mapping[str, list[str]]) -> list[str]:
    targets = ",".join(
        t.address if t.weight == 1 else f"{t.address}*{t.weight}" for t in upstream.targets
    )
    return [
        upstream.id,
        upstream.balance,
        targets,
        "yes" if upstream.tls else "no",
        upstream.health.path if upstream.health is not None else "-",
        str(len(users.get(upstream.id, []))),
    ]


def _listener_row(listener: Listener, _users: Mapping[str, list[str]]) -> list[str]:
    return [listener.id, listener.listen, listener.upstream]


def _cert_row(cert: Certificate, _users: Mapping[str, list[str]]) -> list[str]:
    return [cert.id, ",".join(cert.names)]


_Row = Callable[[Any, Mapping[str, list[str]]], list[str]]
_COLUMNS: dict[str, tuple[Sequence[str], _Row]] = {
    "routes": (
        ("ID", "PRIORITY", "HOSTS", "PATH", "TYPE", "METHODS", "TO", "ENABLED"),
        _route_row,
    ),
    "upstreams": (("ID", "BALANCE", "TARGETS", "TLS", "HEALTH", "USED BY"), _upstream_row),
    "listeners": (("ID", "LISTEN", "UPSTREAM"), _listener_row),
    "certificates": (("ID", "NAMES"), _cert_row),
}


# -- writing ------------------------------------------------------------------------------------


def _build(kind: str, data: Any, doc: Document | None, flags: Mapping[str, str]) -> Item:
    """Validate one item; CliError naming each bad field (and its line or flag)."""
    try:
        return from_dict(kind, data)
    except ValidationError as exc:
        if doc is not None:
            raise invalid_file(doc, exc.fields) from None
        named = {}
        for path, message in exc.fields.items():
            top = path.split(".")[0].split("[")[0]
            named[flags.get(top, path)] = message
        noun = _common.NOUNS[kind]
        raise CliError(
            f"invalid {noun}, nothing was written: {describe_errors(None, named)}"
        ) from None


def _check_upstream(snap: Snapshot, item: Item) -> None:
    """A clear message for a route or listener naming an upstream that does not exist."""
    upstream = getattr(item, "upstream", None)
    if upstream is not None and not _exists(snap, "upstreams", upstream):
        raise CliError(
            f"upstream {upstream!r} does not exist (add it first: minirouter upstream add); "
            "nothing was written"
        )


def _create(store_url: str | None, kind: str, item: Item) -> None:
    """Store a new item; refused if its id is taken."""
    noun = _common.NOUNS[kind]
    with connect(store_url) as store:
        for _attempt in range(_ATTEMPTS):
            snap = store.snapshot()
            if _exists(snap, kind, item.id):
                raise CliError(
                    f"{noun} {item.id!r} already exists; change it with "
                    f"`minirouter {_GROUPS[kind]} edit {item.id}` (nothing was written)"
                )
            _check_upstream(snap, item)
            try:
                # expect_rev: the id must still be free when the write lands.
                rev = store.apply([Change.put(item)], expect_rev=snap.rev, actor=actor())
            except ConflictError:
                continue  # something else changed meanwhile: look again
            click.echo(f"Added {noun} {item.id!r} (revision {rev}).")
            return
    raise CliError("the config keeps changing concurrently; nothing was written, try again")


def _item_source(
    kind: str,
    item_id: str | None,
    file: str | None,
    data: dict[str, Any],
    flags: Mapping[str, str],
) -> Item:
    """The item to add: from -f FILE, or from the flags' `data` (None values left out)."""
    given = {k: v for k, v in data.items() if v is not None}
    if file is not None:
        if given:
            used = ", ".join(sorted(flags.get(k, k) for k in given))
            raise click.UsageError(f"-f FILE and {used} cannot be combined")
        doc = read_document(file)
        item = _build(kind, doc.data, doc, flags)
        if item_id is not None and item.id != item_id:
            raise CliError(f"the file describes {item.id!r}, not {item_id!r}")
        return item
    if item_id is None:
        raise click.UsageError("give the ID (and flags), or -f FILE")
    return _build(kind, {"id": item_id, **given}, None, flags)


# -- the generic commands -------------------------------------------------------------------------


def _add_generic(group: click.Group, kind: str) -> None:
    """Register ls, show, rm and edit for `kind` on `group`."""
    noun = _common.NOUNS[kind]
    complete = complete_ids(kind)

    @group.command("ls", help=f"List the {kind}: a table of the main fields, or --json.")
    @store_option
    @json_option
    def ls(store_url: str | None, as_json: bool) -> None:
        with connect(store_url) as store:
            snap = store.snapshot()
        warn_invalid(snap.invalid, [kind])
        items = getattr(snap.config, kind)
        if as_json:
            # Private keys only ever with `cert show --show-key` (or `export`).
            echo_json({"rev": snap.rev, "items": [_shown(kind, i, False) for i in items]})
            return
        if not items:
            click.echo(f"No {kind} (store at revision {snap.rev}).")
            return
        headers, row = _COLUMNS[kind]
        users = _users(snap)
        table(headers, [row(item, users) for item in items])

    def show(store_url: str | None, as_json: bool, item_id: str, show_key: bool = True) -> None:
        with connect(store_url) as store:
            snap = store.snapshot()
        data = _shown(kind, _find(snap, kind, item_id), show_key)
        if as_json:
            echo_json(data)
        else:
            click.echo(to_yaml(data), nl=False)

    show_help = f"Print one {noun} as YAML (the shape `apply` and `add -f` take), or --json."
    show_cmd = click.Command("show", callback=show, help=show_help)
    show_cmd.params.append(click.Argument(["item_id"], metavar="ID", shell_complete=complete))
    if kind == "certificates":
        show_cmd.params.append(
            click.Option(["--show-key"], is_flag=True, help="Print the private key too.")
        )
    group.add_command(json_option(store_option(show_cmd)))

    @group.command("rm", help=f"Remove {noun}(s) by ID, as one revision.")
    @click.argument("item_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete)
    @store_option
    def rm(item_ids: tuple[str, ...], store_url: str | None) -> None:
        ids = list(dict.fromkeys(item_ids))
        with connect(store_url) as store:
            try:
                rev = store.apply([Change.delete(kind, i) for i in ids], actor=actor())
            except NotFoundError as exc:
                raise CliError(f"{exc}; nothing was removed") from None
            except ValidationError as exc:
                # An upstream still in use: the store names its users.
                why = "; ".join(
                    f"{_common.NOUNS.get(p.partition('/')[0], p)} "
                    f"{p.partition('/')[2].partition('.')[0]!r} is {m}"
                    for p, m in exc.fields.items()
                )
                raise CliError(f"cannot remove: {why}; nothing was removed") from None
        names = ", ".join(repr(i) for i in ids)
        click.echo(f"Removed {noun} {names} (revision {rev}).")

    @group.command(
        "edit",
        help=f"Edit one {noun} in $VISUAL / $EDITOR (as YAML); it is validated before it is "
        "written. Quitting without saving, or saving it unchanged, writes nothing.",
    )
    @click.argument("item_id", metavar="ID", shell_complete=complete)
    @store_option
    def edit(item_id: str, store_url: str | None) -> None:
        with connect(store_url) as store:
            _edit(store, kind, item_id)


def _shown(kind: str, item: Item, show_key: bool) -> dict[str, Any]:
    data = to_dict(item)
    if kind == "certificates" and not show_key:
        data["key"] = _HIDDEN_KEY
    return data


def _edit(store: Store, kind: str, item_id: str) -> None:
    noun = _common.NOUNS[kind]
    snap = store.snapshot()
    original = _find(snap, kind, item_id)
    header = (
        f"# {noun} {item_id!r} at revision {snap.rev}. Save and quit to write it; "
        "quit without saving to cancel.\n"
    )
    text = header + to_yaml(to_dict(original))
    while True:
        edited = _common.edit_text(text)
        if edited is None:
            click.echo("No changes (not saved).")
            return
        try:
            doc = parse_document(f"{noun} {item_id}", edited)
            item = _build(kind, doc.data, doc, {})
            if item.id != item_id:
                raise CliError(
                    f"the id cannot be changed by edit ({item_id!r} became {item.id!r}); "
                    "use add and rm"
                )
        except CliError as exc:
            message = exc.format_message()
            if not _common.stdin_is_tty() or not _common.confirm(f"{message}\nEdit again?"):
                raise
            kept = "".join(
                line for line in edited.splitlines(keepends=True) if not line.startswith("# error:")
            )
            text = f"# error: {message}\n{kept}"
            continue
        break
    if item == original:
        click.echo("No changes.")
        return
    change = ItemChange(kind, item_id, "change", to_dict(original), to_dict(item), item)
    for line in render_change(f"{kind}/{item_id}", change, indent="", details=True):
        click.echo(line)
    rev = snap.rev
    for _attempt in range(_ATTEMPTS):
        try:
            new_rev = store.apply([Change.put(item)], expect_rev=rev, actor=actor())
        except ConflictError:
            # Something changed meanwhile: fine unless it was this very item.
            latest = store.snapshot()
            current = next((i for i in getattr(latest.config, kind) if i.id == item_id), None)
            if current != original:
                raise CliError(
                    f"{noun} {item_id!r} was changed by someone else while you edited it "
                    f"(store now at revision {latest.rev}); nothing was written: edit it again"
                ) from None
            rev = latest.rev
            continue
        except ValidationError as exc:
            raise CliError(
                f"refused by the store, nothing was written: {describe_errors(None, exc.fields)}"
            ) from None
        click.echo(f"Saved {noun} {item_id!r} (revision {new_rev}).")
        return
    raise CliError("the config keeps changing concurrently; nothing was written, try again")


# -- the groups -----------------------------------------------------------------------------------


@main.group("route")
def route_group() -> None:
    """Manage routes: which requests go where.

    A route matches requests by host, path, method and headers, and forwards them to an
    upstream (or redirects them).
    """


@main.group("upstream")
def upstream_group() -> None:
    """Manage upstreams: the servers behind routes.

    An upstream is a set of targets (host:port, optionally weighted) with a balancing
    policy, timeouts and health checks; routes and listeners forward to it.
    """


@main.group("listener")
def listener_group() -> None:
    """Manage TCP listeners (L4 forwarding).

    A listener accepts raw TCP connections on an address and forwards them to an upstream.
    """


@main.group("cert")
def cert_group() -> None:
    """Manage TLS certificates (chosen by SNI).

    Certificates terminate TLS on the HTTP listener; the one whose names match the client's
    server name (SNI) is used.
    """


for _kind, _group in (
    ("routes", route_group),
    ("upstreams", upstream_group),
    ("listeners", listener_group),
    ("certificates", cert_group),
):
    _add_generic(_group, _kind)

_FILE_OPTION = click.option(
    "-f",
    "--file",
    "file",
    type=FILE_ARG,
    help="Read the item from this YAML or JSON file (- for stdin) instead of flags.",
)


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep:
        name, sep, text = value.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected NAME=VALUE, got {value!r}")
    return name.strip(), text.strip()


def _headers(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> Any:
    return dict(_header(v) for v in values) or None


_ROUTE_FLAGS = {
    "hosts": "--host",
    "path": "--path",
    "path_type": "--path-type",
    "methods": "--method",
    "headers": "--header",
    "priority": "--priority",
    "upstream": "--upstream",
    "redirect": "--redirect",
    "strip_prefix": "--strip-prefix",
    "rewrite": "--rewrite",
    "preserve_host": "--preserve-host",
    "max_body_size": "--max-body-size",
    "websocket": "--no-websocket",
    "enabled": "--disabled",
}


@route_group.command("add")
@click.argument("route_id", metavar="[ID]", required=False)
@_FILE_OPTION
@click.option("--path", help='Path to match, e.g. /api/ (prefix routes; default "/").')
@click.option("--path-type", type=click.Choice(PATH_TYPES), help="How --path matches.")
@click.option("--host", "hosts", multiple=True, help="Host or *.suffix (repeatable; none = any).")
@click.option("--method", "methods", multiple=True, help="HTTP method (repeatable; none = any).")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_headers,
    metavar="NAME=VALUE",
    help="A request header that must be present with this value (repeatable).",
)
@click.option("--priority", type=int, help="Higher wins among matching routes (default 0).")
@click.option("--upstream", help="The upstream to forward to.")
@click.option("--redirect", metavar="URL", help="Redirect (308) here instead of forwarding.")
@click.option("--strip-prefix", is_flag=True, help="Drop the matched prefix before forwarding.")
@click.option("--rewrite", metavar="TEMPLATE", help="Regex routes: the new path, e.g. /v2/$1.")
@click.option("--preserve-host", is_flag=True, help="Send the client's Host upstream.")
@click.option(
    "--max-body-size",
    metavar="SIZE",
    help='Request body limit for this route ("10m", bytes; 0 = unlimited; default: the core\'s).',
)
@click.option("--no-websocket", is_flag=True, help="Answer WebSocket upgrades as plain requests.")
@click.option("--disabled", is_flag=True, help="Add the route switched off.")
@store_option
def route_add(
    route_id: str | None,
    file: str | None,
    path: str | None,
    path_type: str | None,
    hosts: tuple[str, ...],
    methods: tuple[str, ...],
    headers: dict[str, str] | None,
    priority: int | None,
    upstream: str | None,
    redirect: str | None,
    strip_prefix: bool,
    rewrite: str | None,
    preserve_host: bool,
    max_body_size: str | None,
    no_websocket: bool,
    disabled: bool,
    store_url: str | None,
) -> None:
    """Add a route, from flags or from -f FILE (one route in YAML or JSON).

    \b
    Example:
      minirouter route add api-v1 --host api.example.com --path /v1/ --upstream api --strip-prefix
    """
    data: dict[str, Any] = {
        "hosts": list(hosts) or None,
        "path": path,
        "path_type": path_type,
        "methods": list(methods) or None,
        "headers": headers,
        "priority": priority,
        "upstream": upstream,
        "redirect": {"to": redirect} if redirect is not None else None,
        # Flags left off are None: the model's defaults apply.
        "strip_prefix": True if strip_prefix else None,
        "rewrite": rewrite,
        "preserve_host": True if preserve_host else None,
        "max_body_size": max_body_size,  # the model parses "10m" and names the field if bad
        "websocket": False if no_websocket else None,
        "enabled": False if disabled else None,
    }
    item = _item_source("routes", route_id, file, data, _ROUTE_FLAGS)
    _create(store_url, "routes", item)


def _target(value: str) -> Any:
    address, sep, weight = value.partition(",")
    if not sep:
        return address
    try:
        return {"address": address, "weight": int(weight)}
    except ValueError:
        raise click.BadParameter(f"expected HOST:PORT[,WEIGHT], got {value!r}") from None


def _targets(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> Any:
    return [_target(v) for v in values] or None


@upstream_group.command("add")
@click.argument("upstream_id", metavar="[ID]", required=False)
@_FILE_OPTION
@click.option(
    "--target",
    "targets",
    multiple=True,
    callback=_targets,
    metavar="HOST:PORT[,WEIGHT]",
    help="A server (repeatable); a weight implies --balance weighted.",
)
@click.option("--balance", type=click.Choice(BALANCES), help="How requests are spread.")
@click.option("--hash-on", metavar="client_ip|header:NAME", help="With --balance hash.")
@click.option("--tls", is_flag=True, help="Speak HTTPS to the targets.")
@click.option("--health-path", metavar="PATH", help="Check PATH actively (e.g. /healthz).")
@store_option
def upstream_add(
    upstream_id: str | None,
    file: str | None,
    targets: list[Any] | None,
    balance: str | None,
    hash_on: str | None,
    tls: bool,
    health_path: str | None,
    store_url: str | None,
) -> None:
    """Add an upstream, from flags or from -f FILE (one upstream in YAML or JSON).

    \b
    Example:
      minirouter upstream add api --target 10.0.0.5:9001 --target 10.0.0.6:9001,3
    """
    data: dict[str, Any] = {
        "targets": targets,
        "balance": balance,
        "hash_on": hash_on,
        "tls": True if tls else None,
        "health": {"path": health_path} if health_path is not None else None,
    }
    flags = {
        "targets": "--target",
        "balance": "--balance",
        "hash_on": "--hash-on",
        "tls": "--tls",
        "health": "--health-path",
    }
    if file is None and targets is None and upstream_id is not None:
        raise click.UsageError("give at least one --target HOST:PORT (or -f FILE)")
    item = _item_source("upstreams", upstream_id, file, data, flags)
    _create(store_url, "upstreams", item)


@listener_group.command("add")
@click.argument("listener_id", metavar="[ID]", required=False)
@_FILE_OPTION
@click.option("--listen", metavar="HOST:PORT", help="Where to accept TCP connections.")
@click.option("--upstream", help="The upstream to forward them to.")
@store_option
def listener_add(
    listener_id: str | None,
    file: str | None,
    listen: str | None,
    upstream: str | None,
    store_url: str | None,
) -> None:
    """Add a TCP listener, from flags or from -f FILE.

    \b
    Example:
      minirouter listener add pg --listen 0.0.0.0:15432 --upstream pg-pool
    """
    flags = {"listen": "--listen", "upstream": "--upstream"}
    item = _item_source(
        "listeners", listener_id, file, {"listen": listen, "upstream": upstream}, flags
    )
    _create(store_url, "listeners", item)


@cert_group.command("add")
@click.argument("cert_id", metavar="[ID]", required=False)
@_FILE_OPTION
@click.option("--name", "names", multiple=True, help="Server name or *.suffix (repeatable).")
@click.option("--cert-file", type=click.File("r"), help="PEM certificate (chain).")
@click.option("--key-file", type=click.File("r"), help="PEM private key.")
@store_option
def cert_add(
    cert_id: str | None,
    file: str | None,
    names: tuple[str, ...],
    cert_file: IO[str] | None,
    key_file: IO[str] | None,
    store_url: str | None,
) -> None:
    """Add a certificate, from flags or from -f FILE.

    \b
    Example:
      minirouter cert add example --name example.com --name '*.example.com' \\
          --cert-file fullchain.pem --key-file privkey.pem
    """
    data = {
        "names": list(names) or None,
        "cert": cert_file.read() if cert_file is not None else None,
        "key": key_file.read() if key_file is not None else None,
    }
    flags = {"names": "--name", "cert": "--cert-file", "key": "--key-file"}
    item = _item_source("certificates", cert_id, file, data, flags)
    _create(store_url, "certificates", item)
