"""Settings of a control-plane process (`minirouter control`): plain data, no Flask."""

from __future__ import annotations

from dataclasses import dataclass

# A whole config with certificates (PEM text) fits easily; larger bodies are refused with 413.
DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ControlSettings:
    """What `create_app` needs.

    `secret_key` signs the GUI's session cookies; None: a random key generated once and kept
    in the store (`Store.shared_secret`), so that every control process on that store accepts
    the others' cookies. `cookie_secure` marks the cookie Secure (set it when the control
    plane is reached over HTTPS, e.g. behind a TLS-terminating proxy).
    """

    store_url: str
    secret_key: str | None = None
    max_body_size: int = DEFAULT_MAX_BODY
    cookie_secure: bool = False
    session_lifetime: float = 8 * 3600.0  # seconds a login lasts
