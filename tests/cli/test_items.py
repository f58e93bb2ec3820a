"""`minirouter route|upstream|listener|cert ls|show|add|rm|edit`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from control import pem_material
from minirouter.cli import _common

from .conftest import BASIC, Cli, shape

Write = Callable[..., Path]

# Real material: the model checks that a certificate parses and that its key matches.
PEM_CERT = pem_material.CERT
PEM_KEY = pem_material.KEY


@pytest.fixture
def basic(cli: Cli, write: Write) -> Cli:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    return cli


# -- ls and show ---------------------------------------------------------------------------------


def test_route_ls(basic: Cli) -> None:
    lines = basic.ok("route", "ls").stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "PRIORITY",
        "HOSTS",
        "PATH",
        "TYPE",
        "METHODS",
        "TO",
        "ENABLED",
    ]
    assert lines[1].split() == [
        "api-v1",
        "0",
        "api.example.com",
        "/v1/",
        "prefix",
        "*",
        "api",
        "yes",
    ]
    assert lines[2].split() == ["site", "0", "*", "/", "prefix", "*", "web", "yes"]


def test_upstream_ls_counts_users(basic: Cli) -> None:
    lines = basic.ok("upstream", "ls").stdout.splitlines()
    assert lines[0].split() == ["ID", "BALANCE", "TARGETS", "TLS", "HEALTH", "USED", "BY"]
    assert lines[1].split() == [
        "api",
        "weighted",
        "127.0.0.1:9001,127.0.0.1:9002*3",
        "no",
        "-",
        "1",
    ]


def test_ls_json(basic: Cli) -> None:
    routes = basic.json("route", "ls")
    assert routes["rev"] == 1
    assert routes["items"] == [shape("routes", r) for r in BASIC["routes"]]
    assert basic.json("upstream", "ls")["items"] == [
        shape("upstreams", u) for u in BASIC["upstreams"]
    ]
    assert basic.json("listener", "ls") == {"rev": 1, "items": []}


def test_ls_of_nothing(cli: Cli) -> None:
    assert cli.ok("cert", "ls").stdout == "No certificates (store at revision 0).\n"


def test_show(basic: Cli) -> None:
    shown = basic.ok("route", "show", "api-v1").stdout
    assert yaml.safe_load(shown) == BASIC["routes"][0]
    assert shown.startswith("id: api-v1\n")
    assert basic.json("upstream", "show", "api") == {**BASIC["upstreams"][0], "balance": "weighted"}


def test_show_missing(basic: Cli) -> None:
    assert "route 'nope' does not exist" in basic.fails("route", "show", "nope")


def test_show_invalid_stored_item(basic: Cli) -> None:
    basic.backend.raw_put("routes", "bad", "{not json")
    err = basic.fails("route", "show", "bad")
    assert "route 'bad' is stored but invalid (invalid JSON" in err
    assert "left out 1 invalid stored item(s): routes/bad" in basic("route", "ls").stderr


# -- add -----------------------------------------------------------------------------------------


def test_route_add_with_flags(basic: Cli) -> None:
    out = basic.ok(
        "route", "add", "admin",
        "--host", "admin.example.com", "--host", "*.admin.example.com",
        "--path", "/admin/", "--path-type", "exact", "--method", "get", "--method", "POST",
        "--header", "X-Canary=1", "--priority", "10", "--upstream", "web", "--strip-prefix",
    ).stdout  # fmt: skip
    assert out == "Added route 'admin' (revision 2).\n"
    assert basic.json("route", "show", "admin") == {
        "id": "admin",
        "hosts": ["admin.example.com", "*.admin.example.com"],
        "path": "/admin/",
        "path_type": "exact",
        "methods": ["GET", "POST"],
        "headers": {"X-Canary": "1"},
        "priority": 10,
        "upstream": "web",
        "strip_prefix": True,
    }


def test_route_add_redirect_and_disabled(basic: Cli) -> None:
    basic.ok("route", "add", "old", "--path", "/old/", "--redirect", "https://new/", "--disabled")
    assert basic.json("route", "show", "old") == {
        "id": "old",
        "path": "/old/",
        "redirect": {"to": "https://new/"},
        "enabled": False,
    }


def test_route_add_body_limit_and_no_websocket(basic: Cli) -> None:
    basic.ok(
        "route", "add", "up", "--path", "/up/", "--upstream", "web",
        "--max-body-size", "10m", "--no-websocket",
    )  # fmt: skip
    assert basic.json("route", "show", "up") == {
        "id": "up",
        "path": "/up/",
        "upstream": "web",
        "max_body_size": 10 * 1024 * 1024,
        "websocket": False,
    }
    err = basic.fails(
        "route", "add", "x", "--path", "/x/", "--upstream", "web", "--max-body-size", "big"
    )
    assert "--max-body-size: invalid size 'big'" in err
    assert basic.rev() == 2


def test_route_add_names_the_bad_flags(basic: Cli) -> None:
    err = basic.fails(
        "route", "add", "x", "--path", "no-slash", "--host", "a..b", "--upstream", "api"
    )
    assert err.startswith("minirouter: invalid route, nothing was written: ")
    assert '--path: must start with "/"' in err
    assert "--host: invalid host 'a..b'" in err
    assert basic.rev() == 1


def test_route_add_unknown_upstream(basic: Cli) -> None:
    err = basic.fails("route", "add", "x", "--path", "/x/", "--upstream", "nope")
    assert "upstream 'nope' does not exist" in err
    assert basic.rev() == 1


def test_add_existing_id_is_refused(basic: Cli) -> None:
    err = basic.fails("route", "add", "site", "--path", "/x/", "--upstream", "api")
    assert "route 'site' already exists" in err and "minirouter route edit site" in err
    assert basic.rev() == 1


def test_add_usage_errors(basic: Cli, write: Write) -> None:
    basic.fails("route", "add", "--path", "/x/", code=2)  # no ID
    path = str(write({"id": "x", "path": "/x/", "upstream": "api"}))
    basic.fails("route", "add", "-f", path, "--path", "/y/", code=2)  # both
    basic.fails("upstream", "add", "u", code=2)  # no --target
    basic.fails("upstream", "add", "u", "--target", "h:1,heavy", code=2)
    basic.fails("route", "add", "x", "--header", "novalue", "--upstream", "api", code=2)
    assert basic.rev() == 1


def test_add_from_file(basic: Cli, write: Write) -> None:
    yaml_file = write({"id": "from-yaml", "path": "/y/", "upstream": "api", "retries": 3})
    json_file = write({"id": "from-json", "path": "/j/", "upstream": "web"}, as_json=True)
    basic.ok("route", "add", "-f", str(yaml_file))
    basic.ok("route", "add", "from-json", "-f", str(json_file))
    assert basic.json("route", "show", "from-yaml")["retries"] == 3
    assert basic.json("route", "show", "from-json")["upstream"] == "web"
    err = basic.fails("route", "add", "other", "-f", str(yaml_file))
    assert "the file describes 'from-yaml', not 'other'" in err


def test_add_from_invalid_file_names_field_and_line(basic: Cli, write: Write) -> None:
    path = write("id: x\npath: /x/\nupstream: api\nretries: 99\n")
    err = basic.fails("route", "add", "-f", str(path))
    assert "retries (line 4): must be between 0 and 10" in err
    assert basic.rev() == 1


def test_upstream_add(cli: Cli) -> None:
    out = cli.ok(
        "upstream", "add", "pool", "--target", "10.0.0.1:80", "--target", "10.0.0.2:80,5",
        "--balance", "least_conn", "--health-path", "/healthz", "--tls",
    ).stdout  # fmt: skip
    assert out == "Added upstream 'pool' (revision 1).\n"
    assert cli.json("upstream", "show", "pool") == {
        "id": "pool",
        "targets": ["10.0.0.1:80", {"address": "10.0.0.2:80", "weight": 5}],
        "balance": "least_conn",
        "tls": True,
        "health": {},  # the default check: path /healthz
    }


def test_upstream_add_hash_on_needs_hash(cli: Cli) -> None:
    err = cli.fails("upstream", "add", "p", "--target", "h:1", "--hash-on", "header:X-User")
    assert "--hash-on: hashing on a header needs balance: hash" in err
    cli.ok(
        "upstream", "add", "p", "--target", "h:1", "--hash-on", "header:X-User", "--balance", "hash"
    )


def test_listener_add_ls_rm(basic: Cli) -> None:
    basic.ok("listener", "add", "pg", "--listen", "0.0.0.0:15432", "--upstream", "api")
    assert basic.ok("listener", "ls").stdout.splitlines()[1].split() == [
        "pg",
        "0.0.0.0:15432",
        "api",
    ]
    err = basic.fails("upstream", "rm", "api")
    assert "listeners/pg" in err and "routes/api-v1" in err
    basic.ok("listener", "rm", "pg")
    assert basic.config().listeners == ()


def test_cert_add_show_hides_the_key(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text(PEM_CERT)
    (tmp_path / "k.pem").write_text(PEM_KEY)
    cli.ok(
        "cert", "add", "ex", "--name", "example.com", "--name", "*.example.com",
        "--cert-file", str(tmp_path / "c.pem"), "--key-file", str(tmp_path / "k.pem"),
    )  # fmt: skip
    assert cli.ok("cert", "ls").stdout.splitlines()[1].split() == [
        "ex",
        "example.com,*.example.com",
    ]
    shown = yaml.safe_load(cli.ok("cert", "show", "ex").stdout)
    assert shown["cert"] == PEM_CERT
    assert shown["key"].startswith("<hidden")
    assert "PRIVATE KEY" not in json.dumps(cli.json("cert", "ls"))
    assert "PRIVATE KEY" not in json.dumps(cli.json("cert", "show", "ex"))
    assert cli.json("cert", "show", "ex", "--show-key")["key"] == PEM_KEY
    assert yaml.safe_load(cli.ok("cert", "show", "ex", "--show-key").stdout)["key"] == PEM_KEY
    assert "key: |" in cli.ok("cert", "show", "ex", "--show-key").stdout  # a literal block
    assert cli.config().certificates[0].key == PEM_KEY


# -- rm ------------------------------------------------------------------------------------------


def test_rm(basic: Cli) -> None:
    assert basic.ok("route", "rm", "api-v1", "site").stdout == (
        "Removed route 'api-v1', 'site' (revision 2).\n"
    )
    assert basic.config().routes == ()
    assert {r.rev for r in basic.store().history(limit=10)} == {1, 2}


def test_rm_of_a_referenced_upstream_is_refused(basic: Cli) -> None:
    err = basic.fails("upstream", "rm", "web")
    assert err == (
        "minirouter: cannot remove: upstream 'web' is still used by routes/site; "
        "nothing was removed\n"
    )
    assert basic.rev() == 1
    # Removing the user in the same command is fine.
    basic.ok("route", "rm", "site")
    basic.ok("upstream", "rm", "web")


def test_rm_missing(basic: Cli) -> None:
    err = basic.fails("route", "rm", "site", "nope")
    assert "route 'nope' does not exist; nothing was removed" in err
    assert basic.rev() == 1


def test_rm_needs_an_id(basic: Cli) -> None:
    basic.fails("route", "rm", code=2)


# -- edit ----------------------------------------------------------------------------------------


def _editor(tmp_path: Path, code: str) -> dict[str, str | None]:
    """An EDITOR that runs `code` with `path` (pathlib.Path) and `text` set, and saves `text`."""
    script = tmp_path / "fake_editor.py"
    script.write_text(
        "import pathlib, sys\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "text = path.read_text()\n"
        f"{code}\n"
        "path.write_text(text)\n"
    )
    return {"EDITOR": f"{sys.executable} {script}", "VISUAL": None}


def test_edit(basic: Cli, tmp_path: Path) -> None:
    env = _editor(tmp_path, "text = text.replace('/v1/', '/v9/') + 'priority: 4\\n'")
    out = basic.ok("route", "edit", "api-v1", env=env).stdout
    assert out == (
        "~ routes/api-v1\n"
        '    path: "/v1/" -> "/v9/"\n'
        "    priority: (default) -> 4\n"
        "Saved route 'api-v1' (revision 2).\n"
    )
    route = next(r for r in basic.config().routes if r.id == "api-v1")
    assert (route.path, route.priority) == ("/v9/", 4)


def test_edit_sees_the_item_as_yaml(basic: Cli, tmp_path: Path) -> None:
    seen = tmp_path / "seen.yaml"
    env = _editor(tmp_path, f"pathlib.Path({str(seen)!r}).write_text(text)")
    assert basic.ok("upstream", "edit", "api", env=env).stdout == "No changes.\n"
    text = seen.read_text()
    assert text.startswith("# upstream 'api' at revision 1.")
    assert yaml.safe_load(text) == shape("upstreams", BASIC["upstreams"][0])
    assert basic.rev() == 1


def test_edit_not_saved(basic: Cli) -> None:
    out = basic.ok("route", "edit", "site", env={"EDITOR": "true", "VISUAL": None}).stdout
    assert out == "No changes (not saved).\n"
    assert basic.rev() == 1


def test_edit_failing_editor(basic: Cli) -> None:
    err = basic.fails("route", "edit", "site", env={"EDITOR": "false", "VISUAL": None})
    assert "Editing failed" in err
    assert basic.rev() == 1


def test_edit_invalid_writes_nothing(basic: Cli, tmp_path: Path) -> None:
    env = _editor(tmp_path, "text = text.replace('path: /v1/', 'path: nope')")
    err = basic.fails("route", "edit", "api-v1", env=env)
    assert 'path (line 5): must start with "/"' in err
    assert basic.rev() == 1


def test_edit_invalid_on_a_terminal_asks_to_edit_again(
    basic: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = iter(["path: nope\n", None])
    seen: list[str] = []

    def fake_edit(text: str) -> str | None:
        seen.append(text)
        edited = next(texts)
        return None if edited is None else text.replace("path: /v1/\n", edited)

    monkeypatch.setattr(_common, "stdin_is_tty", lambda: True)
    monkeypatch.setattr(_common, "edit_text", fake_edit)
    result = basic("route", "edit", "api-v1", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "No changes (not saved).\n"
    assert "Edit again?" in result.stderr
    assert seen[1].startswith(
        "# error: route api-v1 is invalid, nothing was written: path (line 5)"
    )
    assert basic.rev() == 1


def test_edit_cannot_rename(basic: Cli, tmp_path: Path) -> None:
    env = _editor(tmp_path, "text = text.replace('id: site', 'id: other')")
    assert "the id cannot be changed by edit" in basic.fails("route", "edit", "site", env=env)


def test_edit_conflicting_with_a_change_of_the_same_item(
    basic: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit_while_someone_else_does(text: str) -> str:
        basic.put("routes", {"id": "site", "path": "/", "upstream": "web", "priority": 1})
        return text.replace("upstream: web", "upstream: api")

    monkeypatch.setattr(_common, "edit_text", edit_while_someone_else_does)
    err = basic.fails("route", "edit", "site")
    assert "route 'site' was changed by someone else while you edited it" in err
    assert "nothing was written" in err
    route = next(r for r in basic.config().routes if r.id == "site")
    assert (route.upstream, route.priority) == ("web", 1)


def test_edit_with_an_unrelated_concurrent_change_succeeds(
    basic: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit_while_someone_adds(text: str) -> str:
        basic.put("upstreams", {"id": "other", "targets": ["127.0.0.1:1"]})
        return text.replace("upstream: web", "upstream: api")

    monkeypatch.setattr(_common, "edit_text", edit_while_someone_adds)
    assert "Saved route 'site' (revision 3)." in basic.ok("route", "edit", "site").stdout
    assert next(r for r in basic.config().routes if r.id == "site").upstream == "api"


def test_edit_to_an_unknown_upstream_is_refused_by_the_store(basic: Cli, tmp_path: Path) -> None:
    env = _editor(tmp_path, "text = text.replace('upstream: web', 'upstream: nope')")
    err = basic.fails("route", "edit", "site", env=env)
    assert "refused by the store, nothing was written" in err
    assert "unknown upstream 'nope'" in err
    assert basic.rev() == 1


def test_edit_missing(basic: Cli) -> None:
    assert "upstream 'nope' does not exist" in basic.fails("upstream", "edit", "nope")


# -- completion ----------------------------------------------------------------------------------


def test_shell_completion_of_ids(basic: Cli) -> None:
    result = basic(
        env={
            "_MINIROUTER_COMPLETE": "bash_complete",
            "COMP_WORDS": "minirouter route show s",
            "COMP_CWORD": "3",
        }
    )
    assert result.stdout.split() == ["plain,site"]
