"""Checks for the whole suite: the compiled modules under test are built from the sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from minirouter import extensions


def pytest_sessionstart(session: pytest.Session) -> None:
    """A compiled module older than its .py would be tested instead of the edited source
    (Python prefers the extension): stop and say how to rebuild."""
    if extensions.NO_EXTENSIONS:
        return
    stale = []
    for name in extensions.COMPILED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        built = Path(spec.origin)
        sources = [built.parent / f"{name.rpartition('.')[2]}{ext}" for ext in (".py", ".pxd")]
        if not extensions.is_compiled_path(built):
            stale.append(f"{name}: not compiled")
        elif any(s.stat().st_mtime > built.stat().st_mtime for s in sources):
            stale.append(f"{name}: {built.name} is older than its source")
    if stale:
        pytest.exit(
            "compiled modules out of date (run `make build`, or set MINIROUTER_NO_EXTENSIONS=1"
            " to test the sources): " + "; ".join(stale),
            returncode=4,
        )
