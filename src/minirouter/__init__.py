"""minirouter: a dynamically configurable, minimal HTTP/TCP reverse-proxy router."""

from minirouter import extensions

__version__ = "0.1.0"

if extensions.NO_EXTENSIONS:
    extensions.use_sources()
