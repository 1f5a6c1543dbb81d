"""Who may open the dashboard: the sign-in rule (the drawing is dashboard/widgets/sign_in.py).

Decisions (issue #16 item 2):
- Streamlit listens on 127.0.0.1 by default (.streamlit/config.toml), so out of the box only this machine
  reaches the dashboard and no sign-in is asked.
- Sign-in is required whenever one is configured (a reverse proxy on this machine makes a loopback
  dashboard public, and whoever set a password meant it), and whenever the server is bound to any other
  address. Bound elsewhere with none configured, the dashboard refuses to serve pages and says how to
  configure one: it is never silently open.
- Two ways, the first configured wins: Streamlit's `st.login` (OIDC; an `[auth]` section in
  .streamlit/secrets.toml, and the Authlib package, which Loupe does not install), or the shared password
  `dashboard_password` (loupe.toml, or LOUPE_DASHBOARD_PASSWORD) for a small team. Passwords are compared
  as UTF-8 bytes in constant time, so a non-ASCII password works and a wrong one is refused, never an error.
- With the password, the analyst also gives a name; it is the reviewer identity Review records. With OIDC
  the identity is the provider's email (else name). With no sign-in, it stays the session id.
- `/_stcore/metrics` (Streamlit 1.67) cannot be turned off: it is a fixed route serving, without sign-in,
  session counts and events and cache sizes (per-user labels only if `server.unsafeMetricsUserAttributes`
  is set, which Loupe leaves empty). No question, answer, image or name is in it. Loupe's answer is the
  loopback default; a deployment that exposes the dashboard does it through a reverse proxy that serves
  only `/` and `/_stcore/*` minus `/_stcore/metrics` (deny it, or let only the scraper reach it), with TLS,
  since a shared password travels in the page's websocket.
"""
from __future__ import annotations

import hmac
import importlib.util
import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

from core.errors import AccessError

MAX_NAME_CHARS = 60

Mode = Literal["open", "password", "oidc", "refused"]
OPEN: Final = "open"
PASSWORD: Final = "password"
OIDC: Final = "oidc"
REFUSED: Final = "refused"
HOW_TO_CONFIGURE = (
    "The dashboard is listening on {address}, which other machines can reach, and no sign-in is configured, "
    "so it serves no pages. Do one of these, then restart it:\n"
    "  - a shared password for a small team: set dashboard_password in loupe.toml (or the environment "
    "variable LOUPE_DASHBOARD_PASSWORD); each analyst signs in with it and their name;\n"
    "  - single sign-on: an [auth] section in .streamlit/secrets.toml (redirect_uri, cookie_secret, "
    "client_id, client_secret, server_metadata_url) and `pip install Authlib`;\n"
    "  - or listen on this machine only: server.address = \"127.0.0.1\" in .streamlit/config.toml "
    "(or --server.address 127.0.0.1).")
NEEDS_AUTHLIB = ("Single sign-on is configured ([auth] in .streamlit/secrets.toml), but the Authlib package "
                 "that Streamlit's sign-in needs is not installed: run `pip install Authlib` and restart.")


@dataclass(frozen=True)
class AccessRule:
    """What the dashboard asks before it serves a page; `refusal` says why (and how to fix it) when refused."""

    mode: Mode
    refusal: str = ""


@dataclass(frozen=True)
class SignedIn:
    """The analyst behind a browser session: their identity as Review records it, and how they signed in."""

    identity: str
    method: Literal["password", "oidc"]


def is_loopback(address: str) -> bool:
    """Whether Streamlit's server.address reaches only this machine. Empty means every interface."""
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (all interfaces) or a host name, which may resolve anywhere
        return False


def oidc_available() -> bool:
    return importlib.util.find_spec("authlib") is not None


def access_rule(address: str, *, password: str, oidc_configured: bool, authlib_installed: bool = True) -> AccessRule:
    if oidc_configured:
        return AccessRule(OIDC) if authlib_installed else AccessRule(REFUSED, NEEDS_AUTHLIB)
    if password:
        return AccessRule(PASSWORD)
    if is_loopback(address):
        return AccessRule(OPEN)
    return AccessRule(REFUSED, HOW_TO_CONFIGURE.format(address=repr(address) if address.strip() else
                                                       "every network interface (server.address is unset)"))


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of the UTF-8 bytes (compare_digest refuses non-ASCII str)."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def sign_in_with_password(name: str, given: str, expected: str) -> SignedIn:
    """The analyst's name and the team's password → who they are; AccessError says what is wrong."""
    identity = " ".join(name.split())  # no leading, trailing or repeated spaces, no newlines or tabs
    if not identity:
        raise AccessError("Give your name: Review records it as the reviewer.")
    if len(identity) > MAX_NAME_CHARS:
        raise AccessError(f"Give a name of at most {MAX_NAME_CHARS} characters.")
    if not all(ch.isprintable() for ch in identity):
        raise AccessError("The name contains characters that cannot be shown; use letters, digits and spaces.")
    if not password_matches(given, expected):
        raise AccessError("Wrong password. Ask whoever runs Loupe for the team's password.")
    return SignedIn(identity=identity, method="password")


def oidc_identity(claims: dict[str, object]) -> SignedIn:
    """The provider's email, else its name, else its subject id."""
    for key in ("email", "name", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return SignedIn(identity=value.strip()[:200], method="oidc")
    raise AccessError("The identity provider did not say who you are (no email, name or subject); "
                      "ask whoever runs Loupe to check the provider's scopes.")
