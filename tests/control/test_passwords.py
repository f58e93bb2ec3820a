"""Password hashing and tokens (minirouter.control.accounts), without the app."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest

from minirouter.control import accounts
from minirouter.control.accounts import (
    AccountError,
    hash_password,
    new_token,
    role_allows,
    token_digest,
    verify_password,
)


def test_production_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the suite's cheap KDF off: this is what is really stored
    stored = hash_password("correct horse battery staple")
    assert stored["alg"] == "scrypt"
    # OWASP's scrypt setting (n=2**15, r=8, p=3: the cost of 2**17 with p=1).
    assert (stored["n"], stored["r"], stored["p"]) == (2**15, 8, 3)
    assert len(base64.b64decode(stored["salt"])) == 16
    assert len(base64.b64decode(stored["hash"])) == 32
    assert verify_password("correct horse battery staple", stored)


def test_hash_and_verify() -> None:
    one, two = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert one["salt"] != two["salt"] and one["hash"] != two["hash"]  # salted
    assert verify_password("s3cret-pass", one) and verify_password("s3cret-pass", two)
    assert not verify_password("s3cret-pasS", one)
    assert not verify_password("", one)
    assert "s3cret-pass" not in repr(one)


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"alg": "md5", "salt": "AA==", "hash": "AA=="},
        {"alg": "scrypt", "n": 3, "r": 8, "p": 1, "salt": "AA==", "hash": "AA=="},  # n not 2**k
        {"alg": "scrypt", "n": 16, "r": 1, "p": 1, "salt": "not base64!", "hash": "AA=="},
        {"alg": "pbkdf2_sha256", "iterations": 1000, "salt": "AA==", "hash": "AA=="},  # too weak
    ],
)
def test_malformed_hashes_never_match(broken: dict[str, object]) -> None:
    assert not verify_password("anything", broken)


def test_pbkdf2_hashes_are_read() -> None:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", b"pw-pbkdf2", salt, 600_000)
    stored = {
        "alg": "pbkdf2_sha256",
        "iterations": 600_000,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
    }
    assert verify_password("pw-pbkdf2", stored) and not verify_password("pw-other", stored)


def test_tokens() -> None:
    token = new_token()
    assert len(token) == 43 and token != new_token()
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()


def test_roles() -> None:
    assert role_allows("admin", "viewer") and role_allows("editor", "editor")
    assert not role_allows("viewer", "editor") and not role_allows("root", "viewer")


def test_input_checks() -> None:
    with pytest.raises(AccountError) as caught:
        accounts.check_password("short")
    assert "password" in caught.value.fields
    with pytest.raises(AccountError):
        accounts.check_password("x" * 1025)
    with pytest.raises(AccountError):
        accounts.check_name("has space")
    with pytest.raises(AccountError):
        accounts.check_role("root")
    assert accounts.check_name("alice@example.com") == "alice@example.com"
