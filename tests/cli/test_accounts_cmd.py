"""`minirouter user ...` and `minirouter token ...` over a real store (both backends): what they
write, what they print (a token exactly once, never a password or a hash), and their errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

# Raw access to every byte a store holds (SQLite dump, or every Redis key and value).
from control.conftest import StoreTarget
from minirouter.cli import _common, main
from minirouter.control import ControlSettings, accounts, create_app
from minirouter.control.accounts import Accounts, Identity
from minirouter.control.app import close_app

from .conftest import Cli

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at a test-suite cost: the stored hash carries its parameters, the code path is
    the same (tests/control/test_passwords.py covers the production cost)."""
    monkeypatch.setattr(accounts, "KDF", accounts.ScryptParams(n=16, r=1, p=1))


def raw(cli: Cli) -> bytes:
    return StoreTarget(cli.backend.name, cli.url, cli.backend.path).raw_dump()


def add_user(cli: Cli, name: str, role: str = "editor", password: str = PASSWORD) -> None:
    result = cli.ok("user", "add", name, "--role", role, "--password-stdin", input=password + "\n")
    assert result.stdout == f"Created user {name!r} with role {role}.\n"


def login(cli: Cli, name: str, password: str) -> Identity | None:
    found = Accounts(cli.store()).authenticate(name, password)
    return found[0] if found is not None else None


# -- users ----------------------------------------------------------------------------------------


def test_user_add_ls_rm(cli: Cli) -> None:
    add_user(cli, "alice", "editor")
    add_user(cli, "root", "admin", "another password")
    assert login(cli, "alice", PASSWORD) == Identity("user", "alice", "editor")
    assert login(cli, "root", "another password") == Identity("user", "root", "admin")
    assert login(cli, "alice", "another password") is None

    users = cli.json("user", "ls")["users"]
    assert [(u["name"], u["role"]) for u in users] == [("alice", "editor"), ("root", "admin")]
    assert all(u["created_by"].startswith("cli:") for u in users)
    assert all(set(u) == {"name", "role", "created", "created_by"} for u in users)
    text = cli.ok("user", "ls").stdout
    assert text.splitlines()[0].split() == ["NAME", "ROLE", "CREATED", "CREATED", "BY"]
    assert text.splitlines()[1].split()[:2] == ["alice", "editor"]
    assert PASSWORD not in text

    assert cli.ok("user", "rm", "alice").stdout == "Deleted user 'alice'.\n"
    assert login(cli, "alice", PASSWORD) is None
    assert [u["name"] for u in cli.json("user", "ls")["users"]] == ["root"]
    assert cli.fails("user", "rm", "alice") == "minirouter: user 'alice' does not exist\n"


def test_user_ls_empty(cli: Cli) -> None:
    assert cli.json("user", "ls") == {"users": []}
    assert "No users." in cli.ok("user", "ls").stdout


def test_removing_the_last_admin_warns(cli: Cli) -> None:
    add_user(cli, "root", "admin")
    add_user(cli, "ops", "admin")
    add_user(cli, "alice", "editor")
    assert cli.ok("user", "rm", "ops").stderr == ""
    result = cli.ok("user", "rm", "root")
    assert result.stderr == (
        "minirouter: warning: no admin user is left; "
        "`minirouter user add NAME --role admin` makes one\n"
    )
    assert cli.ok("user", "rm", "alice").stderr == ""


def test_user_add_prompts_twice_without_echo(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "stdin_is_tty", lambda: True)
    # A mismatch, then a password that is too short: both asked again; then a good one.
    typed = f"{PASSWORD}\nsomething else\nshort\n{PASSWORD}\n{PASSWORD}\n"
    result = cli.ok("user", "add", "bob", "--role", "viewer", input=typed)
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert result.stderr.count("Repeat the password") == 2
    assert login(cli, "bob", PASSWORD) == Identity("user", "bob", "viewer")


def test_user_add_without_a_terminal_needs_password_stdin(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_common, "stdin_is_tty", lambda: False)
    err = cli.fails("user", "add", "bob", "--role", "viewer", input=PASSWORD + "\n", code=2)
    assert "--password-stdin" in err
    assert cli.json("user", "ls") == {"users": []}


def test_duplicate_user_is_one_line_and_changes_nothing(cli: Cli) -> None:
    add_user(cli, "alice", "editor")
    err = cli.fails(
        "user", "add", "alice", "--role", "admin", "--password-stdin", input="other password\n"
    )
    assert err == (
        "minirouter: user 'alice' exists already "
        "(change its password with `minirouter user passwd alice`)\n"
    )
    assert login(cli, "alice", PASSWORD) == Identity("user", "alice", "editor")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("bob",), "short\n", "invalid user, nothing was written: password: at least 8"),
        (("bob",), "\n", "no password on stdin"),
        (("bob",), "", "no password on stdin"),
        (("bad name",), PASSWORD + "\n", "invalid user, nothing was written: name: expected"),
    ],
)
def test_invalid_user_is_refused(cli: Cli, args: tuple[str, ...], stdin: str, message: str) -> None:
    err = cli.fails("user", "add", *args, "--role", "viewer", "--password-stdin", input=stdin)
    assert err.startswith(f"minirouter: {message}"), err
    assert cli.json("user", "ls") == {"users": []}


@pytest.mark.parametrize("command", ["user add bob --password-stdin", "token create"])
def test_unknown_role_is_a_usage_error(cli: Cli, command: str) -> None:
    err = cli.fails(*command.split(), "--role", "root", input=PASSWORD + "\n", code=2)
    assert "'root' is not one of 'viewer', 'editor', 'admin'" in err
    assert cli.json("user", "ls") == {"users": []}
    assert cli.json("token", "ls") == {"tokens": []}


def test_passwd(cli: Cli) -> None:
    add_user(cli, "alice", "editor")
    before = cli.store().user("alice")
    assert before is not None
    result = cli.ok("user", "passwd", "alice", "--password-stdin", input="a new password\n")
    assert result.stdout == "Changed the password of user 'alice'.\n"
    assert login(cli, "alice", PASSWORD) is None
    assert login(cli, "alice", "a new password") == Identity("user", "alice", "editor")
    after = cli.store().user("alice")
    assert after is not None
    assert after["created"] == before["created"] and after["password"] != before["password"]

    err = cli.fails("user", "passwd", "alice", "--password-stdin", input="short\n")
    assert err.startswith("minirouter: invalid password, nothing was written: password: at least")
    assert login(cli, "alice", "a new password") is not None
    err = cli.fails("user", "passwd", "nobody", "--password-stdin", input=PASSWORD + "\n")
    assert err == "minirouter: user 'nobody' does not exist\n"


def test_passwords_are_never_stored_or_printed_in_clear(cli: Cli) -> None:
    add_user(cli, "alice", "admin")
    cli.ok("user", "passwd", "alice", "--password-stdin", input="second password\n")
    dump = raw(cli)
    assert b"alice" in dump  # the dump does see the accounts
    assert PASSWORD.encode() not in dump and b"second password" not in dump
    listing = cli.ok("user", "ls", "--json").stdout
    assert "scrypt" not in listing and "salt" not in listing and "hash" not in listing


# -- tokens ---------------------------------------------------------------------------------------


def test_token_create_prints_it_once_and_it_works(cli: Cli) -> None:
    result = cli.ok("token", "create", "--role", "editor", "--name", "ci")
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and len(token) == 43  # the token alone on stdout
    assert "shown only this once" in result.stderr and token not in result.stderr
    assert Accounts(cli.store()).token_identity(token) == Identity("token", "ci", "editor")
    assert token.encode() not in raw(cli)  # only its digest is stored

    listing = cli.ok("token", "ls").stdout + cli.ok("token", "ls", "--json").stdout
    assert "ci" in listing and token not in listing
    tokens = cli.json("token", "ls")["tokens"]
    assert [(t["name"], t["role"]) for t in tokens] == [("ci", "editor")]
    assert set(tokens[0]) == {"name", "role", "created", "created_by"}

    assert cli.ok("token", "revoke", "ci").stdout == "Revoked token 'ci'.\n"
    assert Accounts(cli.store()).token_identity(token) is None
    assert cli.json("token", "ls") == {"tokens": []}
    assert cli.fails("token", "revoke", "ci") == "minirouter: token 'ci' does not exist\n"


def test_token_authenticates_api_calls(cli: Cli) -> None:
    data = cli.json("token", "create", "--role", "viewer")
    assert set(data) == {"token", "name", "role"}
    assert data["role"] == "viewer" and data["name"].startswith("viewer-")
    app = create_app(ControlSettings(cli.url))
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {data['token']}"}
        response = client.get("/api/v1/routes", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        who = client.get("/api/v1/session", headers=headers)
        assert who.json == {"name": data["name"], "role": "viewer", "kind": "token"}
        # A viewer may not write.
        assert client.post("/api/v1/upstreams", json={}, headers=headers).status_code == 403
        cli.ok("token", "revoke", data["name"])
        assert client.get("/api/v1/routes", headers=headers).status_code == 401
    finally:
        close_app(app)


def test_user_logs_in_to_the_api(cli: Cli) -> None:
    add_user(cli, "alice", "admin")
    app = create_app(ControlSettings(cli.url))
    try:
        client = app.test_client()
        response = client.post("/api/v1/session", json={"name": "alice", "password": PASSWORD})
        assert response.status_code == 200 and response.json is not None
        assert response.json["role"] == "admin"
        wrong = client.post("/api/v1/session", json={"name": "alice", "password": "nope nope"})
        assert wrong.status_code == 401
    finally:
        close_app(app)


def test_token_errors(cli: Cli) -> None:
    cli.ok("token", "create", "--role", "admin", "--name", "ops")
    err = cli.fails("token", "create", "--role", "viewer", "--name", "ops")
    assert err.startswith("minirouter: token 'ops' exists already")
    assert [t["role"] for t in cli.json("token", "ls")["tokens"]] == ["admin"]
    err = cli.fails("token", "create", "--role", "viewer", "--name", "no spaces")
    assert err.startswith("minirouter: invalid token, nothing was written: name: expected")
    assert len(cli.json("token", "ls")["tokens"]) == 1


def test_token_ls_empty(cli: Cli) -> None:
    assert cli.json("token", "ls") == {"tokens": []}
    assert "No tokens." in cli.ok("token", "ls").stdout


@pytest.mark.parametrize(
    "args",
    [
        ("user", "ls"),
        ("user", "rm", "x"),
        ("user", "passwd", "x", "--password-stdin"),
        ("user", "add", "x", "--role", "viewer", "--password-stdin"),
        ("token", "ls"),
        ("token", "create", "--role", "viewer"),
        ("token", "revoke", "x"),
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_unreachable_store(args: tuple[str, ...], closed_url: str) -> None:
    result = CliRunner().invoke(
        main, [*args, "--store", closed_url], input=PASSWORD + "\n", prog_name="minirouter"
    )
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"minirouter: cannot reach the config store at {closed_url}: Connection refused\n"
    )


def test_json_output_is_json(cli: Cli) -> None:
    add_user(cli, "alice")
    cli.ok("token", "create", "--role", "viewer", "--name", "t1")
    for args in (("user", "ls", "--json"), ("token", "ls", "--json")):
        assert isinstance(json.loads(cli.ok(*args).stdout), dict)
