"""Errors every command shares: an unreachable or unusable store, bad URLs, where the URL comes
from, and usage errors. These need no working store, so they are not run per backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from minirouter.cli import main
from store.conftest import free_port

COMMANDS = [
    ("export",),
    ("route", "ls"),
    ("route", "show", "x"),
    ("route", "add", "x", "--path", "/", "--upstream", "u"),
    ("route", "rm", "x"),
    ("route", "edit", "x"),
    ("upstream", "ls"),
    ("upstream", "add", "u", "--target", "h:1"),
    ("listener", "ls"),
    ("cert", "show", "x"),
    ("match", "--host", "a", "--path", "/"),
    ("history",),
    ("rollback", "1"),
    ("nodes",),
    ("status",),
]


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="minirouter")


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: "-".join(args[:2]))
def test_unreachable_store(args: tuple[str, ...], closed_url: str) -> None:
    started = time.monotonic()
    result = run(*args, "--store", closed_url)
    assert one_line_error(result) == (
        f"minirouter: cannot reach the config store at {closed_url}: Connection refused"
    )
    assert time.monotonic() - started < 2


def test_unreachable_store_from_the_environment(tmp_path: Path, closed_url: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("upstreams: [{id: a, targets: ['h:1']}]\n")
    result = run("apply", "-f", str(path), "--yes", env={"MINIROUTER_STORE": closed_url})
    assert "cannot reach the config store" in one_line_error(result)


def test_unusable_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    url = f"sqlite://{tmp_path}/file/store.db"
    line = one_line_error(run("route", "ls", "--store", url))
    assert line.startswith(f"minirouter: cannot use the config store at {url}: ")


def test_not_a_store_file(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    line = one_line_error(run("status", "--store", f"sqlite://{tmp_path}/junk.db"))
    assert line.startswith("minirouter: ") and "junk.db" in line


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "unsupported store URL 'ftp://example.com/x'"),
        ("redis://127.0.0.1:1/0?prefix=no{braces}", "invalid key prefix"),
        ("sqlite://", "invalid store URL"),
    ],
)
def test_bad_store_url(url: str, says: str) -> None:
    assert says in one_line_error(run("route", "ls", "--store", url))


def test_the_flag_wins_over_the_environment(tmp_path: Path, closed_url: str) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    result = run("route", "ls", "--store", url, env={"MINIROUTER_STORE": closed_url})
    assert result.exit_code == 0, result.output
    assert result.stdout == "No routes (store at revision 0).\n"


def test_the_default_is_the_embedded_store(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"MINIROUTER_STORE": None, "XDG_STATE_HOME": str(tmp_path)}
    result = run("status", env=env)
    assert result.exit_code == 0, result.output
    assert f"store:        sqlite://{tmp_path}/minirouter/store.db" in result.stdout
    assert (tmp_path / "minirouter" / "store.db").exists()


def test_completion_never_creates_the_embedded_store(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "MINIROUTER_STORE": None,
        "XDG_STATE_HOME": str(tmp_path),
        "_MINIROUTER_COMPLETE": "bash_complete",
        "COMP_WORDS": "minirouter route show ",
        "COMP_CWORD": "3",
    }
    result = run(env=env)
    assert result.exit_code == 0 and result.stdout.strip() == ""
    assert not (tmp_path / "minirouter").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("apply",),
        ("apply", "-f"),
        ("route",),
        ("route", "frobnicate"),
        ("history", "--limit", "0"),
        ("match", "--host", "a"),
        ("nodes", "--bogus"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args, env={"MINIROUTER_STORE": "sqlite:///nonexistent/never/opened.db"})
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(
    "args",
    [
        (),
        *[(name,) for name in ("apply", "export", "match", "history", "rollback", "nodes", "status")],
        *[(group, sub) for group in ("route", "upstream", "listener", "cert") for sub in ("ls", "show", "add", "rm", "edit")],
    ],
)  # fmt: skip
def test_help(args: tuple[str, ...]) -> None:
    result = run(*args, "--help")
    assert result.exit_code == 0, result.output
    assert ("--store URL" if args else "Commands:") in result.stdout


def test_unreachable_sentinel_is_one_short_line() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mm"
    line = one_line_error(run("route", "ls", "--store", url))
    assert line == f"minirouter: cannot reach the config store at {url}: No master found for 'mm'"
