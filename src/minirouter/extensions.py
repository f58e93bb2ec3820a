"""Compiled or plain Python: which implementation of the data plane runs.

Two kinds of module are compiled when the package is built (setup.py):

* `_fastpath`, written in Cython, with its plain-Python twin `_fastpath_py`; `fastpath` picks one.
* The per-request modules in `COMPILED`: plain Python, compiled by Cython as they are, with an
  augmenting ``.pxd`` beside each that makes their classes extension types (attributes in C
  slots, hot methods called directly). The ``.py`` stays the one source: the compiled module
  sits beside it and Python's import system prefers it.

`MINIROUTER_NO_EXTENSIONS=1` runs plain Python everywhere: `fastpath` takes `_fastpath_py`, and
`use_sources()` (called by the package on import) makes the modules in `COMPILED` load from
their ``.py`` files even where a compiled one is present. The test suite runs the data-plane
tests in both modes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("MINIROUTER_NO_EXTENSIONS") == "1"

# Kept in step with the .pxd files beside them; setup.py compiles every module that has one.
COMPILED: tuple[str, ...] = (
    "minirouter.core.balancer",
    "minirouter.core.metrics",
    "minirouter.core.protocol",
    "minirouter.core.upstream",
)


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the modules in `COMPILED` as their .py files, never as extension modules."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED or path is None:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def use_sources() -> None:
    """Load the modules in `COMPILED` from their .py sources from now on (idempotent)."""
    if not any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def is_compiled_path(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names an extension module (a compiled build)."""
    return os.fspath(path).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def is_compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from an extension module."""
    return is_compiled_path(module.__file__ or "")
