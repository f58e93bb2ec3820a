"""minirouter: a dynamically configurable, minimal HTTP/TCP reverse-proxy router."""

__version__ = "0.1.0"
