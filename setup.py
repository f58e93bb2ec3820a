"""Build the compiled modules; everything else is declared in pyproject.toml.

Two kinds (see src/minirouter/extensions.py): the Cython fast path `_fastpath.pyx`, and the
per-request modules of minirouter.core that have an augmenting .pxd beside their .py (compiled
from the .py as it is; the .pxd declares their classes as extension types).

MINIROUTER_CYTHON_DEBUG=1 builds with line tracing and writes annotated HTML reports beside
the sources (`cython -a`), for profiling where Python is still touched.
MINIROUTER_NO_EXTENSIONS=1 skips the extensions entirely (pure-Python install).
"""

import os
from pathlib import Path

from setuptools import Extension, setup

extensions = []
if os.environ.get("MINIROUTER_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    debug = os.environ.get("MINIROUTER_CYTHON_DEBUG") == "1"
    macros = [("CYTHON_TRACE", "1")] if debug else []
    common = {"language_level": "3", "linetrace": debug}
    extensions = cythonize(
        [
            Extension(
                "minirouter._fastpath",
                ["src/minirouter/_fastpath.pyx"],
                define_macros=macros,
                extra_compile_args=["-O2"],
            )
        ],
        compiler_directives={**common, "boundscheck": False, "wraparound": False},
        annotate=debug,
    )
    extensions += cythonize(
        [
            Extension(
                f"minirouter.core.{pxd.stem}",
                [str(pxd.with_suffix(".py"))],
                define_macros=macros,
                extra_compile_args=["-O2"],
            )
            for pxd in sorted(Path("src/minirouter/core").glob("*.pxd"))
        ],
        # Python's semantics, unchanged: negative indexes and IndexError stay as they are. The
        # .py modules carry mypy's annotations; their C types come from the .pxd only (an
        # `x: float` would otherwise become a C double that refuses None).
        compiler_directives={**common, "annotation_typing": False},
        include_path=["src"],
        annotate=debug,
    )

setup(ext_modules=extensions)
