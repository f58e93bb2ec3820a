"""TLS contexts: the upstream side (`tls: true` upstreams).

Contexts are cached per setting: building one loads the system CA store, which costs
milliseconds, and a pooled connection must not pay that per connect.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minirouter.model import Upstream


@lru_cache(maxsize=64)
def _client_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def upstream_context(spec: Upstream) -> ssl.SSLContext:
    """The client-side context for connections to a `tls: true` upstream."""
    return _client_context(spec.verify)


def upstream_server_name(spec: Upstream, host: str) -> str:
    """The SNI name (and the name verified) for a connection to `host`."""
    return spec.sni or host
