"""The fast-path API: the compiled `_fastpath` when it is available, else `_fastpath_py`.

`MINIROUTER_NO_EXTENSIONS=1` forces the plain-Python implementation (the same switch that makes
setup.py skip building the extension). A missing or broken extension also falls back to it, so a
pure-Python install still works; `IMPLEMENTATION` says which one is in use ("c" or "py"), and the
test suite asserts it is "c" wherever the extension is expected. Same pattern as yarl's
`_quoting.py`: type checkers always see the plain-Python module, which is the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

__all__ = [
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "Candidate",
    "Edits",
    "Explanation",
    "Match",
    "RouteTable",
    "build_request_head",
    "build_response_head",
    "compile_edits",
    "normalize_host",
    "parse_simple_request",
    "parse_simple_response",
]

from minirouter.extensions import NO_EXTENSIONS

IMPLEMENTATION: Literal["c", "py"]

if TYPE_CHECKING or NO_EXTENSIONS:
    from minirouter._fastpath_py import (
        Candidate,
        Edits,
        Explanation,
        Match,
        RouteTable,
        build_request_head,
        build_response_head,
        compile_edits,
        normalize_host,
        parse_simple_request,
        parse_simple_response,
    )

    IMPLEMENTATION = "py"
else:
    try:
        from minirouter._fastpath import (
            Candidate,
            Edits,
            Explanation,
            Match,
            RouteTable,
            build_request_head,
            build_response_head,
            compile_edits,
            normalize_host,
            parse_simple_request,
            parse_simple_response,
        )

        IMPLEMENTATION = "c"
    except ImportError:  # pragma: no cover - only without a built extension
        from minirouter._fastpath_py import (
            Candidate,
            Edits,
            Explanation,
            Match,
            RouteTable,
            build_request_head,
            build_response_head,
            compile_edits,
            normalize_host,
            parse_simple_request,
            parse_simple_response,
        )

        IMPLEMENTATION = "py"
