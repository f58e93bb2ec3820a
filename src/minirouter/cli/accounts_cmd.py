"""`minirouter user add|ls|rm|passwd` and `minirouter token create|ls|revoke`: the accounts of
the control plane, kept in the config store.

Users log in to the GUI (and `POST /api/v1/session`) with a password; tokens authenticate API
calls (``Authorization: Bearer TOKEN``). Both have a role: viewer (reads), editor (config
writes) or admin (everything, users and tokens included). Passwords are stored only as scrypt
hashes and tokens only as SHA-256 digests: neither can be shown again later.
"""

from __future__ import annotations

import datetime
import secrets
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from minirouter.cli import _common, main
from minirouter.control.accounts import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    AccountError,
    AccountExists,
    Accounts,
    check_name,
    check_password,
    hash_password,
)

from ._common import (
    CliError,
    CliUsageError,
    actor,
    connect,
    echo_json,
    json_option,
    store_option,
    table,
    warn,
)

_ROLE = click.Choice(ROLES)
_ROLE_HELP = (
    "viewer: reads the config; editor: also changes it; admin: also manages users and tokens."
)


def _when(at: object) -> str:
    if isinstance(at, bool) or not isinstance(at, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _invalid(what: str, exc: AccountError) -> CliError:
    details = "; ".join(f"{field}: {message}" for field, message in exc.fields.items())
    return CliError(f"invalid {what}, nothing was written: {details}")


def _exists(name: str) -> CliError:
    return CliError(
        f"user {name!r} exists already (change its password with `minirouter user passwd {name}`)"
    )


def _valid_password(value: str) -> str:
    try:
        return check_password(value)
    except AccountError as exc:
        raise click.BadParameter("; ".join(exc.fields.values()), param_hint="password") from None


def _read_password(password_stdin: bool) -> str:
    """The new password: one line of stdin, or asked twice on the terminal without echo."""
    if password_stdin:
        line: str = sys.stdin.readline()
        piped = line.removesuffix("\n").removesuffix("\r")
        if not piped:
            raise CliError("no password on stdin (expected one line)")
        return piped
    if not _common.stdin_is_tty():
        raise CliUsageError(
            "no terminal to ask for the password on: pipe it in with --password-stdin"
        )
    typed: str = click.prompt(
        f"Password (at least {MIN_PASSWORD_LENGTH} characters)",
        hide_input=True,
        confirmation_prompt="Repeat the password",
        value_proc=_valid_password,  # asks again at once if too short
        err=True,
    )
    return typed


def _rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            str(r.get("name", "-")),
            str(r.get("role", "-")),
            _when(r.get("created")),
            str(r.get("created_by") or "-"),
        ]
        for r in records
    ]


_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of asking for it "
    "(for scripts: printf '%s\\n' \"$PW\" | minirouter user add ...).",
)


# -- users ----------------------------------------------------------------------------------------


@main.group("user")
def user_group() -> None:
    """Manage the users who log in to the GUI and the API.

    A user logs in with a name and a password (`POST /api/v1/session`) and gets a role:
    viewer, editor or admin. Passwords are stored as scrypt hashes only.
    """


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True, help=_ROLE_HELP)
@_PASSWORD_STDIN
@store_option
def user_add(name: str, role: str, password_stdin: bool, store_url: str | None) -> None:
    """Create the user NAME with a role and a password.

    Without --password-stdin the password is asked for twice on the terminal, without echo.
    It needs at least 8 characters. An existing user is not changed: use `user passwd`.

    \b
      minirouter user add alice --role editor
      printf '%s\\n' "$PW" | minirouter user add ci --role viewer --password-stdin
    """
    try:
        check_name(name)
    except AccountError as exc:
        raise _invalid("user", exc) from None
    with connect(store_url) as store:
        if store.user(name) is not None:  # before asking for a password in vain
            raise _exists(name)
        password = _read_password(password_stdin)
        try:
            user = Accounts(store).create_user(name, role, password, by=actor())
        except AccountExists:  # created meanwhile
            raise _exists(name) from None
        except AccountError as exc:
            raise _invalid("user", exc) from None
    click.echo(f"Created user {user['name']!r} with role {user['role']}.")


@user_group.command("ls")
@store_option
@json_option
def user_ls(store_url: str | None, as_json: bool) -> None:
    """List the users: name, role, when and by whom each was created.

    Password hashes are never shown. --json: {"users": [{"name", "role", "created",
    "created_by"}]}.
    """
    with connect(store_url) as store:
        users = Accounts(store).users()
    if as_json:
        echo_json({"users": users})
        return
    if not users:
        click.echo("No users. Create one with `minirouter user add NAME --role admin`.")
        return
    table(["NAME", "ROLE", "CREATED", "CREATED BY"], _rows(users))


@user_group.command("rm")
@click.argument("name")
@store_option
def user_rm(name: str, store_url: str | None) -> None:
    """Delete the user NAME; their login sessions stop working at once."""
    with connect(store_url) as store:
        accounts = Accounts(store)
        record = store.user(name)
        if not accounts.delete_user(name):
            raise CliError(f"user {name!r} does not exist")
        was_admin = record is not None and record.get("role") == "admin"
        last_admin = was_admin and not any(u.get("role") == "admin" for u in accounts.users())
    click.echo(f"Deleted user {name!r}.")
    if last_admin:
        warn("no admin user is left; `minirouter user add NAME --role admin` makes one")


@user_group.command("passwd")
@click.argument("name")
@_PASSWORD_STDIN
@store_option
def user_passwd(name: str, password_stdin: bool, store_url: str | None) -> None:
    """Set a new password for the user NAME.

    The user's role is kept; their login sessions stop working at once. Without
    --password-stdin the new password is asked for twice on the terminal, without echo.
    """
    with connect(store_url) as store:
        if store.user(name) is None:  # before asking for a password in vain
            raise CliError(f"user {name!r} does not exist")
        password = _read_password(password_stdin)
        try:
            check_password(password)
        except AccountError as exc:
            raise _invalid("password", exc) from None
        record = store.user(name)
        if record is None:
            raise CliError(f"user {name!r} does not exist")
        record["password"] = hash_password(password)
        store.add_user(record, replace=True)
    click.echo(f"Changed the password of user {name!r}.")


# -- tokens ---------------------------------------------------------------------------------------


@main.group("token")
def token_group() -> None:
    """Manage API tokens, for scripts and CI.

    A token is sent as `Authorization: Bearer TOKEN` on API calls. It has a name and a role: viewer, editor or admin. It is shown once, when it is
    created; the store keeps only its SHA-256 digest.
    """


@token_group.command("create")
@click.option("--role", type=_ROLE, required=True, help=_ROLE_HELP)
@click.option("--name", help="A name to list and revoke it by. Default: ROLE-<random>.")
@store_option
@json_option
def token_create(role: str, name: str | None, store_url: str | None, as_json: bool) -> None:
    """Create an API token and print it, this once.

    The token alone goes to stdout (the rest to stderr), so that a script can take it:

    \b
      TOKEN=$(minirouter token create --role editor --name ci)
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:5000/api/v1/routes

    --json prints {"token", "name", "role"}. Keep the token now: it cannot be shown again
    (revoke it and create another if it is lost).
    """
    if name is None:
        name = f"{role}-{secrets.token_hex(4)}"
    with connect(store_url) as store:
        try:
            token, record = Accounts(store).create_token(name, role, by=actor())
        except AccountExists:
            raise CliError(
                f"token {name!r} exists already (revoke it first, or pick another --name)"
            ) from None
        except AccountError as exc:
            raise _invalid("token", exc) from None
    if as_json:
        echo_json({"token": token, "name": record["name"], "role": record["role"]})
        return
    click.echo(
        f"Created token {record['name']!r} with role {record['role']}. "
        "It is shown only this once: keep it now.",
        err=True,
    )
    click.echo(token)


@token_group.command("ls")
@store_option
@json_option
def token_ls(store_url: str | None, as_json: bool) -> None:
    """List the API tokens: name, role, when and by whom each was created.

    The tokens themselves are never shown (the store does not have them). --json:
    {"tokens": [{"name", "role", "created", "created_by"}]}.
    """
    with connect(store_url) as store:
        tokens = Accounts(store).tokens()
    if as_json:
        echo_json({"tokens": tokens})
        return
    if not tokens:
        click.echo("No tokens. Create one with `minirouter token create --role ROLE`.")
        return
    table(["NAME", "ROLE", "CREATED", "CREATED BY"], _rows(tokens))


@token_group.command("revoke")
@click.argument("name")
@store_option
def token_revoke(name: str, store_url: str | None) -> None:
    """Revoke the token NAME: API calls with it are refused from now on."""
    with connect(store_url) as store:
        if not Accounts(store).revoke_token(name):
            raise CliError(f"token {name!r} does not exist")
    click.echo(f"Revoked token {name!r}.")
