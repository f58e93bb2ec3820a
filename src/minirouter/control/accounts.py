"""Control-plane accounts: users (password login) and API tokens, with roles.

No Flask here: the CLI (`minirouter user add`, `minirouter token create`) uses the same code.

- Roles are ordered: viewer (reads) < editor (config writes) < admin (everything, including
  users and tokens); a role allows what the roles below it allow.
- Passwords are hashed with scrypt (random salt; the parameters are stored with the hash) and
  compared in constant time; a login for an unknown user costs the same KDF run.
- Tokens are `secrets.token_urlsafe(32)` (256 random bits). Only their SHA-256 digest is
  stored: a fast hash is enough for a secret that cannot be guessed, and it makes the check
  of a request one store lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from minirouter.store import Store

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "AccountError",
    "AccountExists",
    "Accounts",
    "Identity",
    "hash_password",
    "new_token",
    "role_allows",
    "token_digest",
    "verify_password",
]

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")  # each allows what those before do

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # bounds the KDF's input


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt's cost parameters: CPU/memory cost `n`, block size `r`, parallelism `p`."""

    n: int
    r: int
    p: int


# OWASP's password storage recommendation for scrypt (one of its equivalent settings):
# n=2**15, r=8, p=3 costs what n=2**17, p=1 does in CPU (~0.5 s) with a quarter of the
# memory (32 MiB per login rather than 128 MiB: a threaded server may run several at once).
# A test suite may lower it (as Django suites swap in a fast hasher); every stored hash
# carries its own parameters, so changing this never breaks existing passwords.
KDF = ScryptParams(n=2**15, r=8, p=3)
SCRYPT_LEN = 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024  # above 128 * n * r (32 MiB)
PBKDF2_MIN_ITERATIONS = 600_000


class AccountError(ValueError):
    """Invalid account input; `fields` maps each offending field to a message."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.fields.items()))


class AccountExists(Exception):
    """A user or token of that name exists already."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {name!r} exists already")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who makes a request: a token or a logged-in user, and its role."""

    kind: Literal["token", "user"]
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """What the store's history records as the author of a change."""
        return f"{self.kind}:{self.name}"

    def allows(self, role: Role) -> bool:
        """Whether this identity may do what needs `role`."""
        return role_allows(self.role, role)


def role_allows(have: str, need: Role) -> bool:
    """Whether role `have` includes role `need` (unknown roles allow nothing)."""
    return have in ROLES and ROLES.index(have) >= ROLES.index(need)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> dict[str, Any]:
    """A new scrypt hash of `password` with a random salt, with its parameters."""
    params = KDF
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=max(_SCRYPT_MAXMEM, 256 * params.n * params.r),
        dklen=SCRYPT_LEN,
    )
    return {
        "alg": "scrypt",
        "n": params.n,
        "r": params.r,
        "p": params.p,
        "salt": _b64(salt),
        "hash": _b64(digest),
    }


def verify_password(password: str, stored: Mapping[str, Any]) -> bool:
    """Whether `password` matches `stored` (from `hash_password`; PBKDF2-SHA256 read too).

    Constant-time comparison; a malformed record never matches.
    """
    try:
        salt = base64.b64decode(stored["salt"], validate=True)
        expected = base64.b64decode(stored["hash"], validate=True)
        if stored["alg"] == "scrypt":
            n, r, p = int(stored["n"]), int(stored["r"]), int(stored["p"])
            maxmem = max(_SCRYPT_MAXMEM, 256 * n * r)
            actual = hashlib.scrypt(
                password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=len(expected)
            )
        elif stored["alg"] == "pbkdf2_sha256":
            iterations = int(stored["iterations"])
            if iterations < PBKDF2_MIN_ITERATIONS:
                return False
            actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        else:
            return False
    except (KeyError, TypeError, ValueError):
        return False
    return hmac.compare_digest(actual, expected)


_dummy: tuple[ScryptParams, dict[str, Any]] | None = None


def _dummy_hash() -> dict[str, Any]:
    """A hash to verify against when the user does not exist, so that the answer takes as
    long either way (made on first use: it costs a KDF run)."""
    global _dummy
    if _dummy is None or _dummy[0] != KDF:
        _dummy = (KDF, hash_password(secrets.token_urlsafe(16)))
    return _dummy[1]


def new_token() -> str:
    """A new API token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_fingerprint(record: Mapping[str, Any]) -> str:
    """A short value that changes whenever the user's password does.

    Kept in a login session: a session made before a password change stops working.
    """
    password = record.get("password")
    raw = repr(sorted(password.items())) if isinstance(password, Mapping) else ""
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def check_name(name: Any, field: str = "name") -> str:
    """`name` if it is a valid user or token name; AccountError otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise AccountError({field: "expected 1-64 of A-Z a-z 0-9 _ . @ - (starting alphanumeric)"})
    return name


def check_role(role: Any) -> Role:
    """`role` if it is one of ROLES; AccountError otherwise."""
    if role not in ROLES:
        raise AccountError({"role": f"expected one of {', '.join(ROLES)}"})
    return role  # type: ignore[no-any-return]


def check_password(password: Any) -> str:
    """`password` if it is acceptable; AccountError otherwise."""
    if not isinstance(password, str):
        return _password_error("expected a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        return _password_error(f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        return _password_error(f"at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _password_error(message: str) -> str:
    raise AccountError({"password": message})


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """A user or token record as shown to admins: never a password hash or a digest."""
    return {k: record[k] for k in ("name", "role", "created", "created_by") if k in record}


class Accounts:
    """Users and tokens kept in `store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- users ----------------------------------------------------------------------------------

    def create_user(
        self, name: Any, role: Any, password: Any, *, replace: bool = False, by: str = ""
    ) -> dict[str, Any]:
        """Store a new user (or replace one, with `replace`); its public record.

        AccountError for invalid input, AccountExists if the name is taken.
        """
        errors: dict[str, str] = {}
        for check, value in ((check_name, name), (check_role, role), (check_password, password)):
            try:
                check(value)
            except AccountError as exc:
                errors.update(exc.fields)
        if errors:
            raise AccountError(errors)
        record: dict[str, Any] = {
            "name": name,
            "role": role,
            "password": hash_password(password),
            "created": time.time(),
        }
        if by:
            record["created_by"] = by
        if not self.store.add_user(record, replace=replace):
            raise AccountExists("user", name)
        return public(record)

    def users(self) -> list[dict[str, Any]]:
        """Every user's public record, by name."""
        return [public(r) for r in self.store.users()]

    def delete_user(self, name: str) -> bool:
        """Delete a user (its sessions stop working at once); False if there was none."""
        return self.store.delete_user(name)

    def authenticate(self, name: str, password: str) -> tuple[Identity, dict[str, Any]] | None:
        """The identity and record of user `name` if `password` is theirs, else None."""
        record = self.store.user(name) if NAME_RE.fullmatch(name) else None
        if record is None or not isinstance(record.get("password"), Mapping):
            verify_password(password, _dummy_hash())  # the same cost as a real check
            return None
        if len(password) > MAX_PASSWORD_LENGTH or not verify_password(password, record["password"]):
            return None
        identity = self._user_identity(record)
        return (identity, record) if identity is not None else None

    def session_identity(self, name: str, fingerprint: str) -> Identity | None:
        """The identity of a login session for `name`, if the user still exists with the
        same password (fingerprint) as at login."""
        record = self.store.user(name)
        expected = password_fingerprint(record).encode() if record is not None else b""
        if record is None or not hmac.compare_digest(expected, fingerprint.encode()):
            return None
        return self._user_identity(record)

    @staticmethod
    def _user_identity(record: Mapping[str, Any]) -> Identity | None:
        name, role = record.get("name"), record.get("role")
        if not isinstance(name, str) or role not in ROLES:
            return None
        return Identity("user", name, role)

    # -- tokens ---------------------------------------------------------------------------------

    def create_token(self, name: Any, role: Any, *, by: str = "") -> tuple[str, dict[str, Any]]:
        """A new token and its public record. The token is shown this once: only its digest
        is stored. AccountError for invalid input, AccountExists if the name is taken."""
        errors: dict[str, str] = {}
        for check, value in ((check_name, name), (check_role, role)):
            try:
                check(value)
            except AccountError as exc:
                errors.update(exc.fields)
        if errors:
            raise AccountError(errors)
        token = new_token()
        record: dict[str, Any] = {"name": name, "role": role, "created": time.time()}
        if by:
            record["created_by"] = by
        if not self.store.add_token(token_digest(token), record):
            raise AccountExists("token", name)
        return token, public(record)

    def tokens(self) -> list[dict[str, Any]]:
        """Every token's public record, by name."""
        return [public(r) for r in self.store.tokens()]

    def revoke_token(self, name: str) -> bool:
        """Revoke a token at once; False if there was none of that name."""
        return self.store.revoke_token(name)

    def token_identity(self, token: str) -> Identity | None:
        """The identity a presented token stands for, or None (unknown or revoked)."""
        if not token or len(token) > 256:
            return None
        record = self.store.token(token_digest(token))
        if record is None:
            return None
        name, role = record.get("name"), record.get("role")
        if not isinstance(name, str) or role not in ROLES:
            return None
        return Identity("token", name, role)
