"""The `gui` blueprint: the browser GUI, server-rendered pages over the same store as the API.

Reading and writing are split on purpose:

- Pages are rendered here from the store (`control_state()`), with the caller's identity
  from the same `auth.identify` the API uses (a login session; a page without one redirects
  to ``/login``). No view of this blueprint changes anything, so none needs a CSRF check.
- Every change (login, create, replace, delete, rollback, users, tokens, logout) is made by
  the page's JavaScript (``static/gui.js``) calling ``/api/v1`` itself with the session
  cookie and the ``X-CSRF-Token`` header. Validation, ``If-Match``, roles, the history's
  actor and the 422 ``fields`` map shown beside each form field are therefore exactly the
  API's: there is no second write path to keep in step with it.

Errors on these pages are HTML (`error_page`, called by `errors.error_response` for any path
outside ``/api/``); a 401 there is a redirect to the login page.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, render_template, request, session, url_for

from minirouter.certcheck import not_after
from minirouter.model import (
    BALANCES,
    PATH_TYPES,
    REDIRECT_CODES,
    Certificate,
    Listener,
    Route,
    Upstream,
    to_dict,
)
from minirouter.store import Snapshot

from .accounts import ROLES, Identity, Role
from .app import control_state
from .auth import identify
from .bodies import MAX_INT_ARG
from .config_api import matches
from .errors import ApiError
from .fleet_api import describe_nodes
from .health import fleet_health, target_health

P = ParamSpec("P")
R = TypeVar("R")

gui = Blueprint(
    "gui",
    __name__,
    template_folder="templates",
    static_folder="static",
    # Not /static: Flask's app serves its own root_path's static/ there already.
    static_url_path="/assets",
)

HISTORY_PAGE = 20  # changes per history page (whole revisions, as the API pages them)
STATS_WINDOW = 120  # seconds the dashboard's charts span

# Fields each form has inputs for; whatever else an item holds is edited as JSON beside them,
# so that saving a form never drops a field the form does not know.
ROUTE_FORM_FIELDS = frozenset(
    {
        "id",
        "hosts",
        "path",
        "path_type",
        "methods",
        "headers",
        "priority",
        "upstream",
        "redirect",
        "strip_prefix",
        "rewrite",
        "preserve_host",
        "retries",
        "enabled",
    }
)
UPSTREAM_FORM_FIELDS = frozenset(
    {"id", "targets", "balance", "hash_on", "keepalive", "timeouts", "health", "passive"}
)
LISTENER_FORM_FIELDS = frozenset({"id", "listen", "upstream", "tls"})
CERTIFICATE_FORM_FIELDS = frozenset({"id", "names", "cert", "key", "default"})
EXPIRES_SOON = 30 * 86400  # seconds before expiry from which a certificate is flagged

# Everything on the pages is the page's own: scripts and styles only from /assets, no inline
# script, no framing (clickjacking on the delete and rollback buttons).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


# -- access ---------------------------------------------------------------------------------------


def page(role: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a page: a login (or token) with `role` at least.

    Without one, `identify` raises a 401, which `error_page` turns into a redirect to the
    login page; a role too low is a 403 page.
    """

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            who, _ = identify()
            if not who.allows(role):
                raise ApiError(403, f"this page needs the {role} role; you are a {who.role}")
            return view(*args, **kwargs)

        return guarded

    return decorate


def _redirect(location: str) -> Response:
    # flask.redirect is typed as Werkzeug's Response; the error handlers return Flask's.
    response = Response(status=302)
    response.headers["Location"] = location
    response.headers["Cache-Control"] = "no-store"
    return response


def _who() -> Identity | None:
    """The identity already established for this request, without raising."""
    cached: tuple[Identity, bool] | None = g.get("minirouter_identity")
    return cached[0] if cached is not None else None


def _safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (never another host)."""
    if not target:
        return url_for("gui.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("gui.dashboard")
    if "\\" in target:  # browsers read "/\host" as "//host"
        return url_for("gui.dashboard")
    return target


@gui.app_context_processor
def _context() -> dict[str, Any]:
    # The nav and the forms need who is logged in and the session's CSRF token; pages rendered
    # for an anonymous caller (login, errors) get None for both.
    who = _who()
    csrf = session.get("csrf") if who is not None else None
    return {"who": who, "csrf_token": csrf if isinstance(csrf, str) else None, "roles": ROLES}


@gui.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.endpoint != "gui.static":
        # Pages hold config and the CSRF token: never kept by the browser or a proxy.
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(
    status: int,
    message: str,
    fields: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error on a GUI path, as HTML; 401 is a redirect to the login page instead."""
    if status == 401:
        target = request.full_path if request.method == "GET" else request.path
        return _redirect(url_for("gui.login", next=target.rstrip("?")))
    body = render_template(
        "gui/error.html", status=status, message=message, fields=dict(fields or {})
    )
    response = Response(body, status=status, mimetype="text/html")
    for name, value in (headers or {}).items():
        if name.lower() in ("allow", "retry-after"):
            response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


# -- formatting helpers (also used by the templates) ------------------------------------------------


@gui.app_template_filter("when")
def _when(at: Any) -> str:
    """A Unix time as UTC text; the page's script shows it in the browser's time zone."""
    if not isinstance(at, int | float):
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@gui.app_template_filter("iso")
def _iso(at: Any) -> str:
    if not isinstance(at, int | float):
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """An item's JSON shape as ``{"field.path": "value"}``, for a field-by-field diff.

    Lists of plain values stay one line (``["a", "b"]``); lists of objects are indexed
    (``targets[1].weight``), so one changed weight is one changed row.
    """
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        if not value and prefix:
            out[prefix] = "{}"
        return out
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return {prefix: json.dumps(value)}
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: _scalar(value)}


def field_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """The rows of a readable diff: ``{"field", "change": added|removed|changed, "before",
    "after"}``, in the item's field order; unchanged fields are left out."""
    old = flatten(dict(before)) if before is not None else {}
    new = flatten(dict(after)) if after is not None else {}
    rows: list[dict[str, str]] = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key in old and key in new:
            if old[key] != new[key]:
                rows.append(
                    {"field": key, "change": "changed", "before": old[key], "after": new[key]}
                )
        elif key in old:
            rows.append({"field": key, "change": "removed", "before": old[key], "after": ""})
        else:
            rows.append({"field": key, "change": "added", "before": "", "after": new[key]})
    return rows


def _header_lines(headers: Any) -> str:
    """A header map as the form's textarea shows it: one ``Name: value`` per line."""
    if not isinstance(headers, dict):
        return ""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def _target_lines(targets: Any) -> str:
    """Targets as the form's textarea shows them: ``host:port`` or ``host:port weight``."""
    lines: list[str] = []
    for target in targets if isinstance(targets, list) else []:
        if isinstance(target, dict):
            lines.append(f"{target.get('address', '')} {target.get('weight', 1)}")
        else:
            lines.append(str(target))
    return "\n".join(lines)


def _extra_json(data: Mapping[str, Any], covered: frozenset[str]) -> str:
    """The item's fields the form has no input for, as the JSON the form edits them in."""
    extra = {k: v for k, v in data.items() if k not in covered}
    return json.dumps(extra, indent=2) if extra else ""


# -- pages ----------------------------------------------------------------------------------------


@gui.get("/login")
def login() -> Response | str:
    """The login form (its script posts to ``/api/v1/session``)."""
    target = _safe_next(request.args.get("next"))
    try:
        identify()
    except ApiError:
        return render_template("gui/login.html", next=target)
    return _redirect(target)


@gui.get("/")
@page("viewer")
def dashboard() -> str:
    """The fleet and the live charts (the script polls /nodes and /stats every 2 s)."""
    current, fleet = describe_nodes(control_state().store)
    fleet.sort(key=lambda n: str(n.get("node", "")))
    return render_template(
        "gui/dashboard.html", rev=current, nodes=fleet, window=STATS_WINDOW, active="dashboard"
    )


def _invalid(snapshot: Snapshot, kind: str) -> dict[str, str]:
    return {
        key.partition("/")[2]: message
        for key, message in snapshot.invalid.items()
        if key.partition("/")[0] == kind
    }


@gui.get("/routes")
@page("viewer")
def routes() -> str:
    """Every route, searchable (``?q=`` here; the script also filters as one types)."""
    snapshot = control_state().snapshot()
    query = request.args.get("q", "").strip()
    rows = [r for r in snapshot.config.routes if not query or matches(to_dict(r), query.lower())]
    return render_template(
        "gui/routes.html",
        rev=snapshot.rev,
        routes=rows,
        total=len(snapshot.config.routes),
        q=query,
        invalid=_invalid(snapshot, "routes"),
        active="routes",
    )


@gui.get("/upstreams")
@page("viewer")
def upstreams() -> str:
    """Every upstream with its targets and their live health, health checking, and the routes
    that use it."""
    snapshot = control_state().snapshot()
    query = request.args.get("q", "").strip()
    used: dict[str, list[str]] = {}
    for route in snapshot.config.routes:
        if route.upstream is not None:
            used.setdefault(route.upstream, []).append(route.id)
    rows = [u for u in snapshot.config.upstreams if not query or matches(to_dict(u), query.lower())]
    return render_template(
        "gui/upstreams.html",
        rev=snapshot.rev,
        upstreams=rows,
        total=len(snapshot.config.upstreams),
        health=fleet_health(rows, control_state().store.nodes()),
        used=used,
        q=query,
        invalid=_invalid(snapshot, "upstreams"),
        active="upstreams",
    )


def _find(items: Iterable[Any], item_id: str) -> Any:
    return next((item for item in items if item.id == item_id), None)


def _missing(snapshot: Snapshot, kind: str, item_id: str) -> ApiError:
    problem = snapshot.invalid.get(f"{kind}/{item_id}")
    if problem is not None:
        return ApiError(404, f"{kind}/{item_id} is stored but invalid: {problem}")
    return ApiError(404, f"{kind}/{item_id} does not exist")


def _route_form(snapshot: Snapshot, route: Route | None) -> str:
    data = to_dict(route) if route is not None else {}
    return render_template(
        "gui/route_form.html",
        rev=snapshot.rev,
        route=route,
        data=data,
        extra=_extra_json(data, ROUTE_FORM_FIELDS),
        headers_text=_header_lines(data.get("headers")),
        upstream_ids=[u.id for u in snapshot.config.upstreams],
        redirect_codes=REDIRECT_CODES,
        path_types=PATH_TYPES,
        active="routes",
    )


# "+new": an id can never hold "+" ("new" is a valid route id, and would be shadowed).
@gui.get("/routes/+new")
@page("editor")
def new_route() -> str:
    """The form for a new route."""
    return _route_form(control_state().snapshot(), None)


@gui.get("/routes/<item_id>")
@page("viewer")
def route(item_id: str) -> str:
    """One route: its form (read-only for viewers)."""
    snapshot = control_state().snapshot()
    found = _find(snapshot.config.routes, item_id)
    if found is None:
        raise _missing(snapshot, "routes", item_id)
    return _route_form(snapshot, found)


def _upstream_form(snapshot: Snapshot, upstream: Upstream | None) -> str:
    data = to_dict(upstream) if upstream is not None else {}
    used = [r.id for r in snapshot.config.routes if upstream and r.upstream == upstream.id]
    return render_template(
        "gui/upstream_form.html",
        rev=snapshot.rev,
        upstream=upstream,
        data=data,
        extra=_extra_json(data, UPSTREAM_FORM_FIELDS),
        targets_text=_target_lines(data.get("targets")),
        targets_health=target_health(upstream, control_state().store.nodes()) if upstream else [],
        used=used,
        balances=BALANCES,
        active="upstreams",
    )


@gui.get("/upstreams/+new")
@page("editor")
def new_upstream() -> str:
    """The form for a new upstream."""
    return _upstream_form(control_state().snapshot(), None)


@gui.get("/upstreams/<item_id>")
@page("viewer")
def upstream(item_id: str) -> str:
    """One upstream: its form (read-only for viewers) and the routes that use it."""
    snapshot = control_state().snapshot()
    found = _find(snapshot.config.upstreams, item_id)
    if found is None:
        raise _missing(snapshot, "upstreams", item_id)
    return _upstream_form(snapshot, found)


# -- listeners and certificates ----------------------------------------------------------------


def _item_list(kind: str, template: str, **extra: Any) -> str:
    snapshot = control_state().snapshot()
    query = request.args.get("q", "").strip()
    every = getattr(snapshot.config, kind)
    rows = [item for item in every if not query or matches(to_dict(item), query.lower())]
    return render_template(
        template,
        rev=snapshot.rev,
        items=rows,
        total=len(every),
        q=query,
        invalid=_invalid(snapshot, kind),
        active=kind,
        **extra,
    )


@gui.get("/listeners")
@page("viewer")
def listeners() -> str:
    """Every TCP listener (address -> upstream), searchable."""
    return _item_list("listeners", "gui/listeners.html")


def _has_field(cls: type[Any], name: str) -> bool:
    """Whether the model's item type has field `name` (the form shows an input for it then)."""
    return any(f.name == name for f in dataclasses.fields(cls))


def _listener_form(snapshot: Snapshot, listener: Listener | None) -> str:
    data = to_dict(listener) if listener is not None else {}
    return render_template(
        "gui/listener_form.html",
        rev=snapshot.rev,
        listener=listener,
        data=data,
        extra=_extra_json(data, LISTENER_FORM_FIELDS),
        has_tls=_has_field(Listener, "tls"),
        upstream_ids=[u.id for u in snapshot.config.upstreams],
        active="listeners",
    )


@gui.get("/listeners/+new")
@page("editor")
def new_listener() -> str:
    """The form for a new listener."""
    return _listener_form(control_state().snapshot(), None)


@gui.get("/listeners/<item_id>")
@page("viewer")
def listener(item_id: str) -> str:
    """One listener: its form (read-only for viewers)."""
    snapshot = control_state().snapshot()
    found = _find(snapshot.config.listeners, item_id)
    if found is None:
        raise _missing(snapshot, "listeners", item_id)
    return _listener_form(snapshot, found)


def expiry(certificate: Certificate) -> dict[str, Any] | None:
    """When `certificate` expires, for the templates: ``{"at", "days", "soon", "expired"}``,
    or None when its PEM cannot be read."""
    at = not_after(certificate.cert)
    if at is None:
        return None
    left = at - datetime.now(UTC).timestamp()
    return {
        "at": at,
        "days": int(left // 86400),
        "soon": 0 <= left < EXPIRES_SOON,
        "expired": left < 0,
    }


@gui.get("/certificates")
@page("viewer")
def certificates() -> str:
    """Every certificate: id, names, expiry. Never the private key."""
    return _item_list("certificates", "gui/certificates.html", expiry=expiry)


def _certificate_form(snapshot: Snapshot, certificate: Certificate | None) -> str:
    data = to_dict(certificate) if certificate is not None else {}
    data.pop("key", None)  # never sent back to the browser, whatever the role
    return render_template(
        "gui/certificate_form.html",
        rev=snapshot.rev,
        certificate=certificate,
        data=data,
        extra=_extra_json(data, CERTIFICATE_FORM_FIELDS),
        has_default=_has_field(Certificate, "default"),
        expires=expiry(certificate) if certificate is not None else None,
        active="certificates",
    )


@gui.get("/certificates/+new")
@page("editor")
def new_certificate() -> str:
    """The form for a new certificate."""
    return _certificate_form(control_state().snapshot(), None)


@gui.get("/certificates/<item_id>")
@page("viewer")
def certificate(item_id: str) -> str:
    """One certificate: its names and PEM; the key field is empty (blank keeps it)."""
    snapshot = control_state().snapshot()
    found = _find(snapshot.config.certificates, item_id)
    if found is None:
        raise _missing(snapshot, "certificates", item_id)
    return _certificate_form(snapshot, found)


def _hide_key(kind: str, data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An item for the history page: a certificate's private key replaced by a fingerprint.

    The GUI never shows a private key once saved, whatever the role (the API still gives it
    to editors, for export and apply); the fingerprint still shows whether a change replaced it.
    """
    if data is None:
        return None
    shown_data = dict(data)
    key = shown_data.get("key")
    if kind == "certificates" and isinstance(key, str):
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        shown_data["key"] = f"(private key, hidden; sha256 {digest}…)"
    return shown_data


def _before_arg() -> int | None:
    raw = request.args.get("before", "")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_INT_ARG:
        raise ApiError(400, "bad query parameter before: expected a revision number")
    return int(raw)


@gui.get("/history")
@page("viewer")
def history() -> str:
    """Revisions, newest first, each change with a field-by-field diff; rollback buttons."""
    before = _before_arg()
    store = control_state().store
    current = store.current_rev()
    records = store.history(HISTORY_PAGE, before)
    revisions: list[dict[str, Any]] = []
    for record in records:
        if not revisions or revisions[-1]["rev"] != record.rev:
            revisions.append(
                {"rev": record.rev, "actor": record.actor, "at": record.at, "changes": []}
            )
        before_data = _hide_key(record.kind, record.before)
        after_data = _hide_key(record.kind, record.after)
        what = "created" if before_data is None else "deleted" if after_data is None else "updated"
        revisions[-1]["changes"].append(
            {
                "seq": record.seq,
                "kind": record.kind,
                "id": record.id,
                "what": what,
                "rows": field_diff(before_data, after_data),
            }
        )
    for revision in revisions:
        revision["changes"].sort(key=lambda change: change["seq"])
    oldest = records[-1].rev if records else None
    more = oldest is not None and oldest > 1 and len(records) >= HISTORY_PAGE
    return render_template(
        "gui/history.html",
        rev=current,
        revisions=revisions,
        next_before=oldest if more else None,
        active="history",
    )


@gui.get("/match")
@page("viewer")
def match() -> str:
    """The match tester: which route a request would hit (the script asks ``/api/v1/match``)."""
    snapshot = control_state().snapshot()
    return render_template(
        "gui/match.html",
        rev=snapshot.rev,
        host=request.args.get("host", ""),
        path=request.args.get("path", "/"),
        method=request.args.get("method", "GET"),
        active="match",
    )


@gui.get("/users")
@page("admin")
def users() -> str:
    """Users (admins only): list, add, delete."""
    return render_template("gui/users.html", users=control_state().accounts.users(), active="users")


@gui.get("/tokens")
@page("admin")
def tokens() -> str:
    """API tokens (admins only): list, create (shown once), revoke."""
    return render_template(
        "gui/tokens.html", tokens=control_state().accounts.tokens(), active="tokens"
    )
