"""`minirouter apply` and `export`: validation first, the diff, prompts, conflicts, round trips."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from minirouter.cli import _common, _config
from minirouter.model import Route, Upstream, from_dict

from .conftest import BASIC, Cli

Write = Callable[..., Path]


def test_adds_upstreams_and_the_routes_using_them_in_one_revision(cli: Cli, write: Write) -> None:
    out = cli.ok("apply", "-f", str(write(BASIC)), "--yes").stdout
    assert "upstreams:\n  + api\n  + web\nroutes:\n  + api-v1\n  + site\n" in out
    assert "4 to add, 0 to change, 0 to remove (store at revision 0)." in out
    assert out.endswith("Applied as revision 1.\n")
    config = cli.config()
    assert [u.id for u in config.upstreams] == ["api", "web"]
    assert [r.id for r in config.routes] == ["api-v1", "site"]
    history = cli.store().history()
    assert {r.rev for r in history} == {1}
    assert history[0].actor.startswith("cli:")


def test_export_then_apply_is_no_change(cli: Cli, write: Write, tmp_path: Path) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    exported = cli.ok("export").stdout
    assert exported.startswith("# minirouter config at revision 1\n")
    assert yaml.safe_load(exported)["routes"][0] == BASIC["routes"][0]
    again = cli.ok("apply", "-f", str(write(exported)), "--prune", "--yes").stdout
    assert again == "No changes (store at revision 1).\n"
    assert cli.rev() == 1


def test_export_to_a_file_is_private(cli: Cli, write: Write, tmp_path: Path) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    target = tmp_path / "backup.yaml"
    result = cli.ok("export", "-o", str(target))
    assert result.stdout == ""
    assert "Wrote revision 1" in result.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert cli.ok("apply", "-f", str(target), "--dry-run").stdout.startswith("No changes")


def test_export_of_an_empty_store_applies_back(cli: Cli, write: Write) -> None:
    exported = cli.ok("export").stdout
    assert cli.ok("apply", "-f", str(write(exported)), "--prune").stdout.startswith("No changes")


def test_changes_are_shown_field_by_field(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    changed = json.loads(json.dumps(BASIC))
    changed["routes"][0]["path"] = "/v2/"
    changed["routes"][0]["priority"] = 5
    changed["upstreams"][1]["timeouts"] = {"connect": 1.5}
    out = cli.ok("apply", "-f", str(write(changed)), "--dry-run").stdout
    assert "  ~ web\n      timeouts.connect: (default) -> 1.5\n" in out
    assert '  ~ api-v1\n      path: "/v1/" -> "/v2/"\n      priority: (default) -> 5\n' in out
    assert "0 to add, 2 to change, 0 to remove (store at revision 1)." in out
    assert cli.rev() == 1  # --dry-run wrote nothing


def test_without_prune_other_items_stay(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    only = {"routes": [{"id": "new", "path": "/new/", "upstream": "web"}]}
    out = cli.ok("apply", "-f", str(write(only)), "--yes").stdout
    assert "routes:\n  + new\n" in out
    assert [r.id for r in cli.config().routes] == ["api-v1", "new", "site"]


def test_prune_removes_what_the_file_does_not_name(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    smaller = {"upstreams": [BASIC["upstreams"][1]], "routes": [BASIC["routes"][1]]}
    out = cli.ok("apply", "-f", str(write(smaller)), "--prune", "--yes").stdout
    assert "upstreams:\n  - api\nroutes:\n  - api-v1\n" in out
    assert "0 to add, 0 to change, 2 to remove" in out
    config = cli.config()
    assert [u.id for u in config.upstreams] == ["web"]
    assert [r.id for r in config.routes] == ["site"]


def test_prune_cannot_drop_an_upstream_the_file_still_uses(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    broken = {"upstreams": [BASIC["upstreams"][1]], "routes": BASIC["routes"]}
    err = cli.fails("apply", "-f", str(write(broken)), "--prune", "--yes")
    assert "routes[0].upstream (line " in err
    assert "unknown upstream 'api'" in err
    assert cli.rev() == 1


def test_invalid_file_names_field_and_line_and_writes_nothing(cli: Cli, write: Write) -> None:
    text = """\
upstreams:
  - id: api
    targets: [127.0.0.1:9001]
routes:
  - id: ok
    path: /ok/
    upstream: api
  - id: bad
    path: no-slash
    upstream: api
    colour: blue
"""
    err = cli.fails("apply", "-f", str(write(text)), "--yes")
    assert "is invalid, nothing was written" in err
    assert 'routes[1].path (line 9): must start with "/"' in err
    assert "routes[1].colour (line 11): unknown field" in err
    assert cli.rev() == 0
    assert cli.config().routes == ()


def test_invalid_json_file_names_the_field(cli: Cli, write: Write) -> None:
    data = {"upstreams": [{"id": "api", "targets": ["127.0.0.1:99999"]}]}
    err = cli.fails("apply", "-f", str(write(data, as_json=True)), "--yes")
    assert "upstreams[0].targets[0]" in err and "invalid port" in err
    assert cli.rev() == 0


def test_duplicate_ids_and_unknown_sections(cli: Cli, write: Write) -> None:
    data = {"upstreams": [BASIC["upstreams"][0], BASIC["upstreams"][0]], "rotues": []}
    err = cli.fails("apply", "-f", str(write(data)), "--yes")
    assert "upstreams[1].id (line" in err and "duplicate id 'api' (also upstreams[0])" in err
    assert "rotues (line " in err and "unknown section" in err


def test_unknown_upstream_is_named(cli: Cli, write: Write) -> None:
    data = {"routes": [{"id": "r", "path": "/", "upstream": "nope"}]}
    err = cli.fails("apply", "-f", str(write(data)), "--yes")
    assert "routes[0].upstream (line 4): unknown upstream 'nope'" in err


def test_yaml_syntax_error_names_the_line(cli: Cli, write: Write) -> None:
    err = cli.fails("apply", "-f", str(write("routes:\n  - id: a\n   path: [\n")), "--yes")
    assert "line 3" in err and "invalid YAML" in err


@pytest.mark.parametrize("content", ["", "  \n", "- a\n- b\n", "just text\n"])
def test_a_file_that_is_not_a_config_is_refused(cli: Cli, write: Write, content: str) -> None:
    err = cli.fails("apply", "-f", str(write(content)), "--yes")
    assert "empty" in err or "top level must be a mapping" in err


def test_missing_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    cli.fails("apply", "-f", str(tmp_path / "nope.yaml"), code=2)


def test_stdin(cli: Cli) -> None:
    out = cli.ok("apply", "-f", "-", "--yes", input=json.dumps(BASIC)).stdout
    assert "Applied as revision 1." in out


def test_stdin_needs_yes(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "stdin_is_tty", lambda: True)
    err = cli.fails("apply", "-f", "-", input=json.dumps(BASIC), code=2)
    assert "--yes" in err
    assert cli.rev() == 0


def test_no_terminal_needs_yes_but_dry_run_does_not(cli: Cli, write: Write) -> None:
    path = str(write(BASIC))
    err = cli.fails("apply", "-f", path, code=2)
    assert "confirm with --yes" in err
    assert cli.rev() == 0
    assert "4 to add" in cli.ok("apply", "-f", path, "--dry-run").stdout
    assert cli.rev() == 0


def test_prompt(cli: Cli, write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(write(BASIC))
    monkeypatch.setattr(_common, "stdin_is_tty", lambda: True)
    refused = cli("apply", "-f", path, input="n\n")
    assert refused.exit_code == 1
    assert "Apply these changes (4 to add, 0 to change, 0 to remove)? [y/N]" in refused.stderr
    assert refused.stderr.endswith("minirouter: not applied: nothing was written\n")
    assert cli.rev() == 0
    assert "Applied as revision 1." in cli.ok("apply", "-f", path, input="y\n").stdout


def test_concurrent_change_between_diff_and_write_is_a_conflict(
    cli: Cli, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    changed = {"routes": [{**BASIC["routes"][1], "priority": 7}]}

    def someone_else_writes(_question: str) -> bool:
        cli.put("upstreams", {"id": "other", "targets": ["127.0.0.1:9100"]})
        return True

    monkeypatch.setattr(_common, "stdin_is_tty", lambda: True)
    monkeypatch.setattr(_common, "confirm", someone_else_writes)
    err = cli.fails("apply", "-f", str(write(changed)))
    assert "the config changed while this apply was prepared" in err
    assert "revision 2" in err and "nothing was written" in err
    assert cli.rev() == 2
    assert next(r for r in cli.config().routes if r.id == "site").priority == 0


def test_expect_rev(cli: Cli, write: Write) -> None:
    path = str(write(BASIC))
    err = cli.fails("apply", "-f", path, "--yes", "--expect-rev", "3")
    assert "the store is at revision 0, not 3" in err
    assert cli.rev() == 0
    cli.ok("apply", "-f", path, "--yes", "--expect-rev", "0")
    assert cli.rev() == 1


def test_json_output(cli: Cli, write: Write) -> None:
    path = str(write(BASIC))
    dry = json.loads(cli.ok("apply", "-f", path, "--dry-run", "--json").stdout)
    assert dry["rev"] == 0 and dry["dry_run"] and not dry["applied"]
    assert [(d["kind"], d["id"], d["action"]) for d in dry["diff"]] == [
        ("upstreams", "api", "add"),
        ("upstreams", "web", "add"),
        ("routes", "api-v1", "add"),
        ("routes", "site", "add"),
    ]
    done = json.loads(cli.ok("apply", "-f", path, "--yes", "--json").stdout)
    assert done["rev"] == 1 and done["applied"]
    again = json.loads(cli.ok("apply", "-f", path, "--json").stdout)
    assert again == {"rev": 1, "dry_run": False, "applied": False, "diff": []}


def test_prune_removes_invalid_stored_items(cli: Cli, write: Write) -> None:
    cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    cli.backend.raw_put("routes", "broken", '{"id": "broken", "path": 5}')
    assert "broken" in cli("export").stderr  # left out, with a warning
    out = cli.ok("apply", "-f", str(write(BASIC)), "--prune", "--yes").stdout
    assert "  - broken  (invalid: " in out
    assert cli.store().snapshot().invalid == {}


def test_the_diff_is_coloured_on_a_terminal(cli: Cli, write: Write) -> None:
    result = cli("apply", "-f", str(write(BASIC)), "--dry-run", color=True)
    assert "\x1b[32m+ api\x1b[0m" in result.stdout


def test_items_built_by_the_model_round_trip(cli: Cli, write: Write) -> None:
    """Every field of an upstream and a route goes through apply and export unchanged."""
    upstream = {
        "id": "full",
        "targets": [{"address": "[::1]:9001", "weight": 2}, "host.example:9002"],
        "balance": "round_robin",
        "tls": True,
        "sni": "api.example.com",
        "verify": False,
        "keepalive": 0,
        "timeouts": {"connect": 0.5, "read": 10, "idle": 2.25},
        "health": {"path": "/h", "interval": 1, "timeout": 0.5, "healthy": 1, "unhealthy": 9},
        "passive": {"max_fails": 0, "fail_timeout": 1},
    }
    route = {
        "id": "full",
        "hosts": ["*.example.com", "example.com"],
        "path": "^/v([0-9]+)/(.*)$",
        "path_type": "regex",
        "methods": ["GET", "PATCH"],
        "headers": {"X-Canary": "yes", "X-Num": "1"},
        "priority": -3,
        "upstream": "full",
        "rewrite": "/api/$1/${2}",
        "request_headers": {"set": {"X-Env": "prod"}, "add": {"Via": "x"}, "remove": ["X-D"]},
        "response_headers": {"set": {"X-Y": "null"}, "remove": ["Server"]},
        "preserve_host": True,
        "retries": 0,
        "enabled": False,
    }
    cli.ok("apply", "-f", str(write({"upstreams": [upstream], "routes": [route]})), "--yes")
    config = cli.config()
    assert config.upstreams == (from_dict("upstreams", upstream),)
    assert config.routes == (from_dict("routes", route),)
    assert isinstance(config.upstreams[0], Upstream) and isinstance(config.routes[0], Route)
    exported = cli.ok("export").stdout
    assert cli.ok("apply", "-f", str(write(exported)), "--prune").stdout.startswith("No changes")


def test_large_files_show_a_progress_bar_on_a_terminal(
    cli: Cli, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "PROGRESS_THRESHOLD", 3)
    monkeypatch.setattr(_config, "stderr_is_tty", lambda: True)
    result = cli.ok("apply", "-f", str(write(BASIC)), "--yes")
    assert "validating" in result.stderr
    assert "Applied as revision 1." in result.stdout
