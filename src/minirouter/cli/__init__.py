"""The `minirouter` command: run the parts, manage the config, debug routing.

Each command group lives in its own module; importing them registers them on `main`.
"""

from __future__ import annotations

import click

from minirouter import __version__


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "MINIROUTER"}
)
@click.version_option(__version__, prog_name="minirouter")
def main() -> None:
    """minirouter: a dynamically configurable HTTP/TCP reverse-proxy router."""


from minirouter.cli import accounts_cmd as _accounts_cmd  # noqa: E402,F401  (user, token)
from minirouter.cli import core_cmd as _core_cmd  # noqa: E402,F401  (registers `core`)
from minirouter.cli import declarative_cmd as _declarative_cmd  # noqa: E402,F401  (apply, export)
from minirouter.cli import fleet_cmd as _fleet_cmd  # noqa: E402,F401  (nodes, status)
from minirouter.cli import history_cmd as _history_cmd  # noqa: E402,F401  (history, rollback)
from minirouter.cli import items_cmd as _items_cmd  # noqa: E402,F401  (route, upstream, listener, cert)
from minirouter.cli import match_cmd as _match_cmd  # noqa: E402,F401  (match)
from minirouter.cli import republish_cmd as _republish_cmd  # noqa: E402,F401  (republish)
from minirouter.cli import serve_cmd as _serve_cmd  # noqa: E402,F401  (control, up)
