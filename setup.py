"""Build the Cython fast path; everything else is declared in pyproject.toml.

MINIROUTER_CYTHON_DEBUG=1 builds with line tracing and writes an annotated HTML
report beside the .pyx (`cython -a`), for profiling where Python is still touched.
MINIROUTER_NO_EXTENSIONS=1 skips the extension entirely (pure-Python install).
"""

import os

from setuptools import Extension, setup

extensions = []
if os.environ.get("MINIROUTER_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    debug = os.environ.get("MINIROUTER_CYTHON_DEBUG") == "1"
    macros = [("CYTHON_TRACE", "1")] if debug else []
    extensions = cythonize(
        [
            Extension(
                "minirouter._fastpath",
                ["src/minirouter/_fastpath.pyx"],
                define_macros=macros,
                extra_compile_args=["-O2"],
            )
        ],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "linetrace": debug,
        },
        annotate=debug,
    )

setup(ext_modules=extensions)
