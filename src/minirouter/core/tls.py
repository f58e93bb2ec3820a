"""TLS contexts: termination with SNI (`CertificateStore`) and the upstream side.

Termination: every HTTPS (and `tls: true` L4) listener shares one listener context whose
`sni_callback` switches each handshake to the context of the certificate chosen for the
client's SNI name: an exact name, else the wildcard for its parent name, else the certificate
marked `default: true`; with none of these the handshake ends with an `unrecognized_name`
alert. A config change builds contexts for new or changed certificates off to the side and
swaps one index reference; a handshake already past the callback keeps its context.

Upstream: contexts are cached per setting: building one loads the system CA store, which
costs milliseconds, and a pooled connection must not pay that per connect.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from minirouter.certcheck import load_key_pair, not_after

if TYPE_CHECKING:
    from minirouter.core.metrics import Metrics
    from minirouter.model import Certificate, Upstream

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "CertificateStore",
    "SNIObject",
    "load_key_pair",
    "upstream_context",
    "upstream_server_name",
]

log = logging.getLogger("minirouter.tls")

# A client that has not finished its handshake by then is dropped (asyncio's default is 60 s).
HANDSHAKE_TIMEOUT = 10.0

# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all modern already).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384"


def _harden(ctx: ssl.SSLContext, *, alpn: bool = True) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    if alpn:
        ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


# -- termination --------------------------------------------------------------------------------


class SNIObject(ssl.SSLObject):
    """An SSLObject that remembers the client's SNI name on the server side.

    The standard `server_hostname` is only set on the client side; `ClientProtocol` reads it to
    route by (and check `Host` against) the SNI name, so the listener context makes every
    connection one of these and the SNI callback fills it in.
    """

    _sni: str | None = None
    _failed: ssl.SSLError | None = None

    @property
    def server_hostname(self) -> str | None:
        return self._sni if self._sni is not None else super().server_hostname

    def do_handshake(self) -> None:
        """The handshake step; a failure is reported one step late so its alert goes out.

        uvloop closes the connection as soon as `do_handshake` fails, without sending what the
        failure left in the outgoing buffer: the TLS alert that tells the client why
        (`unrecognized_name`, `protocol_version`, ...). Saying "want read" once makes it send
        that buffer first; the client then closes, or the next step raises the real error.
        """
        if self._failed is not None:
            raise self._failed
        try:
            super().do_handshake()
        except ssl.SSLWantReadError:
            raise
        except ssl.SSLError as exc:
            self._failed = exc
            raise ssl.SSLWantReadError("handshake failed; sending the alert first") from exc


def _server_context(*, alpn: bool = True) -> ssl.SSLContext:
    """A listener-side context; `alpn`: offer `http/1.1` (HTTPS), or no ALPN at all (L4, where
    the client negotiates its own protocol, e.g. `postgresql`, and must not be told `http/1.1`).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, alpn=alpn)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


@dataclass(frozen=True, slots=True)
class _Index:
    """Which context serves which name; replaced whole on every change, never mutated."""

    exact: dict[str, ssl.SSLContext]
    # Wildcard suffix (".example.com") -> context; it serves exactly one more label.
    wildcards: dict[str, ssl.SSLContext]
    default: ssl.SSLContext | None


_Loaded = dict[str, tuple["Certificate", ssl.SSLContext, float | None]]


class CertificateStore:
    """The certificates of the current config, as SSL contexts chosen by SNI.

    `context` serves HTTPS listeners (ALPN `http/1.1`); `l4_context` serves `tls: true` L4
    listeners with the same certificates and no ALPN. OpenSSL negotiates ALPN with the context
    the SNI callback switched to, so each certificate has a context of each kind; the L4 ones
    are built only while some L4 listener terminates TLS (`update(..., l4=True)`).
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        # id -> (the item, its context, when it expires (Unix time) or None)
        self._loaded: _Loaded = {}
        self._l4_loaded: _Loaded = {}  # the same without ALPN, while l4 is on
        self._l4 = False
        self._index = _Index({}, {}, None)
        self._l4_index = _Index({}, {}, None)
        self._seen: tuple[Certificate, ...] | None = None
        self.failed: dict[str, str] = {}  # certificate id -> why its context could not be built
        self.context = _server_context()
        self.context.sslobject_class = SNIObject
        self.context.sni_callback = self._select
        self.l4_context = _server_context(alpn=False)
        self.l4_context.sslobject_class = SNIObject
        self.l4_context.sni_callback = self._select_l4

    def __len__(self) -> int:
        return len(self._loaded)

    def update(
        self, certificates: tuple[Certificate, ...], *, report: bool = True, l4: bool = False
    ) -> None:
        """Take the certificates of a new config; only new or changed ones are loaded.

        `report`: whether TLS is served at all (an HTTPS or a `tls: true` L4 listener): only
        then do the certificate series appear on /metrics. `l4`: whether a `tls: true` L4
        listener exists (then `l4_context` has the certificates too).
        """
        # Most config changes touch routes only; a certificate that failed to load (memfd or
        # file descriptors exhausted) is tried again on the next one.
        if certificates is not self._seen or self.failed or l4 != self._l4:
            self._seen = certificates
            self._l4 = l4
            self._load(certificates)
        if self.metrics is not None:
            self.metrics.set_certificates(
                {cid: expiry for cid, (_, _, expiry) in self._loaded.items()} if report else None
            )

    def _load(self, certificates: tuple[Certificate, ...]) -> None:
        failed: dict[str, str] = {}
        self._loaded = _load_contexts(certificates, self._loaded, failed, alpn=True)
        self._index = _build_index((cert, ctx) for cert, ctx, _ in self._loaded.values())
        if self._l4:
            self._l4_loaded = _load_contexts(certificates, self._l4_loaded, failed, alpn=False)
        else:
            self._l4_loaded = {}
        self._l4_index = _build_index((cert, ctx) for cert, ctx, _ in self._l4_loaded.values())
        self.failed = failed

    def select(self, server_name: str | None, *, l4: bool = False) -> ssl.SSLContext | None:
        """The context for a handshake that asked for `server_name` (None: no SNI sent)."""
        index = self._l4_index if l4 else self._index
        if server_name:
            name = server_name.lower().removesuffix(".")
            ctx = index.exact.get(name)
            if ctx is not None:
                return ctx
            # A wildcard stands for exactly one label, as clients check it (RFC 6125): for
            # "a.b.example.com" only "*.b.example.com" can serve; "*.example.com" would be a
            # certificate the client refuses, where the default (or a clean alert) is right.
            dot = name.find(".")
            if dot > 0 and index.wildcards:
                ctx = index.wildcards.get(name[dot:])
                if ctx is not None:
                    return ctx
        return index.default

    def _select(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        return self._switch(sslobj, server_name, self.select(server_name))

    def _select_l4(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        return self._switch(sslobj, server_name, self.select(server_name, l4=True))

    def _switch(
        self,
        sslobj: ssl.SSLObject | ssl.SSLSocket,
        server_name: str | None,
        ctx: ssl.SSLContext | None,
    ) -> int | None:
        if ctx is None:
            # A clean alert to the client; the failed handshake is logged by nobody (debug).
            if self.metrics is not None:
                self.metrics.tls_unknown_names += 1
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = ctx
        if server_name and isinstance(sslobj, SNIObject):
            sslobj._sni = server_name
        return None


def _load_contexts(
    certificates: Iterable[Certificate], previous: _Loaded, failed: dict[str, str], *, alpn: bool
) -> _Loaded:
    """A context per certificate; unchanged ones are kept, new or changed ones loaded."""
    loaded: _Loaded = {}
    for cert in certificates:
        old = previous.get(cert.id)
        if old is not None and (old[0] is cert or old[0] == cert):
            loaded[cert.id] = old
            continue
        ctx = _server_context(alpn=alpn)
        try:
            load_key_pair(ctx, cert.cert, cert.key)
        except (ssl.SSLError, OSError) as exc:
            # Validation should have caught it; keep the previous version if there is one.
            failed[cert.id] = str(exc)
            log.error("certificate %s cannot be loaded, not served: %s", cert.id, exc)
            if old is not None:
                loaded[cert.id] = old
            continue
        loaded[cert.id] = (cert, ctx, not_after(cert.cert))
    return loaded


def _build_index(items: Iterable[tuple[Certificate, ssl.SSLContext]]) -> _Index:
    exact: dict[str, ssl.SSLContext] = {}
    wildcards: dict[str, ssl.SSLContext] = {}
    default: ssl.SSLContext | None = None
    default_id = ""
    # Sorted by id: when two certificates claim one name, the smaller id wins, in every worker.
    for cert, ctx in sorted(items, key=lambda item: item[0].id, reverse=True):
        for name in cert.names:
            if name.startswith("*."):
                wildcards[name[1:]] = ctx
            else:
                exact[name] = ctx
        if cert.default:
            default, default_id = ctx, cert.id
    if default is not None:
        log.debug("default certificate: %s", default_id)
    return _Index(exact, wildcards, default)


# -- upstream side ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _client_context(verify: bool, ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if ca is not None:
        # Any configured certificate is a trust anchor, so a leaf can be pinned by itself.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def upstream_context(spec: Upstream) -> ssl.SSLContext:
    """The client-side context for connections to a `tls: true` upstream."""
    return _client_context(spec.verify, spec.ca)


def upstream_server_name(spec: Upstream, host: str) -> str:
    """The SNI name (and the name verified) for a connection to `host`."""
    return spec.sni or host
