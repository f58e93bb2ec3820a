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


from minirouter.cli import core_cmd as _core_cmd  # noqa: E402,F401  (registers `core`)
