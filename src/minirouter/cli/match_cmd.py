"""`minirouter match`: which route a request would take, and why every other route lost.

It builds the same route table (`minirouter.fastpath.RouteTable`) that the core builds from the
stored config and asks it to explain its choice: the answer is the core's, not a re-implementation.
"""

from __future__ import annotations

from typing import Any

import click

from minirouter.cli import main
from minirouter.fastpath import Candidate, RouteTable

from ._common import connect, echo_json, json_option, store_option, table, warn_invalid

# Without --all, at most this many routes that do not match at all are listed.
_NON_MATCHING_SHOWN = 20


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep:
        name, sep, text = value.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected NAME=VALUE, got {value!r}")
    return name.strip().lower(), text.strip()


def _headers(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> Any:
    return dict(_header(v) for v in values)


@main.command("match")
@click.option("--host", required=True, help="The Host the request is sent with (port allowed).")
@click.option("--path", required=True, help="The request path (a ?query is ignored).")
@click.option("--method", default="GET", show_default=True, help="The request method.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_headers,
    metavar="NAME=VALUE",
    help="A request header, for routes with header conditions (repeatable).",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="List every route that does not match, not only the first 20.",
)
@store_option
@json_option
def match_cmd(
    host: str,
    path: str,
    method: str,
    headers: dict[str, str],
    show_all: bool,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Show which route wins a request, and why.

    Lists every route with whether it matches and, if it does not win, why it lost.

    Routes are ranked as the core ranks them: higher priority, then the more specific host,
    then the more specific path, then the smaller id. Disabled routes never match.

    \b
    Example:
      minirouter match --host api.example.com --path /v1/users --method POST
    """
    with connect(store_url) as store:
        snap = store.snapshot()
    warn_invalid(snap.invalid, ["routes"])
    request_path = path.partition("?")[0].partition("#")[0] or "/"
    explanation = RouteTable(snap.config.routes).explain(
        host, request_path, method.upper(), headers
    )
    candidates: list[Candidate] = list(explanation.candidates)
    # The table leaves disabled routes out; say so rather than leave them unmentioned.
    candidates += [
        Candidate(route.id, False, "disabled") for route in snap.config.routes if not route.enabled
    ]
    winner = explanation.winner
    if as_json:
        echo_json(
            {
                "rev": snap.rev,
                "route": winner.route.id if winner is not None else None,
                "upstream": winner.route.upstream if winner is not None else None,
                "redirect": (
                    winner.route.redirect.to
                    if winner is not None and winner.route.redirect is not None
                    else None
                ),
                "path": winner.path if winner is not None else None,
                "captures": list(winner.captures) if winner is not None else [],
                "candidates": [
                    {"route": c.route_id, "matched": c.matched, "reason": c.reason}
                    for c in candidates
                ],
            }
        )
        return
    if winner is None:
        click.echo(
            click.style("No route matches", fg="red", bold=True) + ": the router answers 404."
        )
    else:
        route = winner.route
        if route.redirect is not None:
            to = f"redirects ({route.redirect.code}) to {route.redirect.to}"
        else:
            to = f"forwards {winner.path} to upstream {route.upstream}"
        click.echo(f"{click.style(route.id, fg='green', bold=True)} wins: {to}.")
    if not candidates:
        click.echo(f"(no routes stored, revision {snap.rev})")
        return
    matching = [c for c in candidates if c.matched]
    other = [c for c in candidates if not c.matched]
    hidden = 0 if show_all else max(0, len(other) - _NON_MATCHING_SHOWN)
    shown = matching + (other if show_all else other[:_NON_MATCHING_SHOWN])
    click.echo()
    table(
        ("ROUTE", "MATCHES", "RESULT"),
        [(c.route_id, "yes" if c.matched else "no", c.reason) for c in shown],
    )
    if hidden:
        click.echo(f"... and {hidden} more routes that do not match (--all lists them).")
