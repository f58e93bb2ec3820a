"""The compiled data-plane modules: built and loaded by default, replaced by their .py sources
under MINIROUTER_NO_EXTENSIONS=1 (in every process: the core runs as a subprocess in tests)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minirouter import extensions, fastpath
from minirouter.core import protocol

CORE = Path(protocol.__file__ or "").parent


def test_every_pxd_module_is_listed_as_compiled() -> None:
    # setup.py compiles every module with a .pxd; extensions.COMPILED is what the switch covers.
    assert sorted(f"minirouter.core.{p.stem}" for p in CORE.glob("*.pxd")) == sorted(
        extensions.COMPILED
    )


@pytest.mark.skipif(extensions.NO_EXTENSIONS, reason="MINIROUTER_NO_EXTENSIONS=1 run")
def test_compiled_modules_are_the_ones_loaded() -> None:
    for name in extensions.COMPILED:
        module = importlib.import_module(name)
        assert extensions.is_compiled(module), module.__file__
    # Extension types: attributes live in C slots, so an unknown one cannot be set.
    gate = protocol.ReadGate(None)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        gate.typo = 1  # type: ignore[attr-defined]


def _loaded_files(env: dict[str, str]) -> dict[str, object]:
    code = (
        "import importlib, json, sys; from minirouter import fastpath;"
        "names = sys.argv[1:];"
        "print(json.dumps({'impl': fastpath.IMPLEMENTATION,"
        " **{n: importlib.import_module(n).__file__ for n in names}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *extensions.COMPILED],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_no_extensions_loads_every_module_from_its_source() -> None:
    env = {**os.environ, "MINIROUTER_NO_EXTENSIONS": "1"}
    files = _loaded_files(env)
    assert files.pop("impl") == "py"
    for name, path in files.items():
        assert isinstance(path, str) and path.endswith(".py"), (name, path)


@pytest.mark.skipif(extensions.NO_EXTENSIONS, reason="MINIROUTER_NO_EXTENSIONS=1 run")
def test_default_loads_the_compiled_modules_in_a_new_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MINIROUTER_NO_EXTENSIONS"}
    files = _loaded_files(env)
    assert files.pop("impl") == fastpath.IMPLEMENTATION == "c"
    for name, path in files.items():
        assert isinstance(path, str) and extensions.is_compiled_path(path), (name, path)
