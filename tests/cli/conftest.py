"""Fixtures for the CLI tests: `minirouter` run in-process by Click's CliRunner over a REAL
store, parametrized over both backends (a SQLite file of the test's own; the session's
redis-server, emptied for each test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from minirouter.cli import main
from minirouter.model import Config, from_dict, to_dict
from minirouter.store import Change, Store, open_store

# The store suite's redis-server (started once per session) and its helpers, reused as they are.
from store.conftest import Backend, free_port, redis_server, redis_url

__all__ = ["redis_server", "redis_url"]

BASIC = {
    "upstreams": [
        {"id": "api", "targets": ["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 3}]},
        {"id": "web", "targets": ["127.0.0.1:9003"]},
    ],
    "routes": [
        {"id": "api-v1", "hosts": ["api.example.com"], "path": "/v1/", "upstream": "api"},
        {"id": "site", "path": "/", "upstream": "web"},
    ],
}


@dataclass
class Cli:
    """Runs `minirouter` against one store; opens stores on it to look or write behind it."""

    url: str
    backend: Backend

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str | None] | None = None,
        color: bool = False,
    ) -> Result:
        runner = CliRunner()
        return runner.invoke(
            main,
            list(args),
            input=input,
            env={"MINIROUTER_STORE": self.url, **(env or {})},
            prog_name="minirouter",
            color=color,
        )

    def ok(self, *args: str, input: str | bytes | None = None, **kw: Any) -> Result:
        """Run and require exit status 0 (showing the output otherwise)."""
        result = self(*args, input=input, **kw)
        assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
        return result

    def fails(self, *args: str, code: int = 1, **kw: Any) -> str:
        """Run, require exit status `code`, one line on stderr and no traceback; return it."""
        result = self(*args, **kw)
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        if code == 1:
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith("minirouter: "), lines
        return result.stderr

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def store(self) -> Store:
        """Another store on the same data (another process's view); closed at teardown."""
        store = open_store(self.url)
        self.backend.opened.append(store)
        return store

    def config(self) -> Config:
        return self.store().snapshot().config

    def rev(self) -> int:
        return self.store().current_rev()

    def put(self, kind: str, data: dict[str, Any]) -> int:
        """Write one item behind the CLI's back."""
        return self.store().apply([Change.put(from_dict(kind, data))])


def shape(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape the CLI prints for `data`: validated, defaults left out."""
    return to_dict(from_dict(kind, data))


@pytest.fixture(params=["sqlite", "redis"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "redis":
        backend = Backend("redis", request.getfixturevalue("redis_url"))
    else:
        path = tmp_path / "store.db"
        backend = Backend("sqlite", f"sqlite://{path}", path)
    yield Cli(backend.url, backend)
    backend.close()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file (a mapping is dumped as YAML, or JSON with `as_json`)."""
    counter = iter(range(1_000_000))

    def write(content: str | dict[str, Any], *, as_json: bool = False) -> Path:
        suffix = ".json" if as_json else ".yaml"
        path = tmp_path / f"config-{next(counter)}{suffix}"
        if isinstance(content, str):
            path.write_text(content)
        elif as_json:
            path.write_text(json.dumps(content))
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture
def closed_url() -> str:
    """A Redis URL where nothing listens: connecting is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"
