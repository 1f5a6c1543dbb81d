"""The sign-in gate drawn before any page (the rule is core/access.py): open, the team password with the
analyst's name, Streamlit's OIDC sign-in, or a refusal that says how to configure one."""
from __future__ import annotations

import streamlit as st

from core import access
from core.errors import AccessError
from core.settings import Settings
from dashboard.widgets.interface_language import t
from dashboard.widgets.session import session_id

_SIGNED_IN = "loupe-signed-in"


def _oidc_configured() -> bool:
    """An [auth] section in .streamlit/secrets.toml (st.login's configuration)."""
    try:
        return bool(st.secrets.load_if_toml_exists()) and "auth" in st.secrets
    except Exception:  # a secrets file Streamlit cannot parse: refuse to guess that sign-on was meant
        st.error(t("sign_in.secrets_unreadable"))
        st.stop()
        raise  # unreachable: st.stop() ends the script run


def require_sign_in(settings: Settings) -> access.SignedIn | None:
    """Who is signed in (None when the dashboard is open); otherwise draws the sign-in and stops the run."""
    rule = access.access_rule(str(st.get_option("server.address") or ""), password=settings.dashboard_password,
                              oidc_configured=_oidc_configured(), authlib_installed=access.oidc_available())
    if rule.mode == access.OPEN:
        return None
    if rule.mode == access.REFUSED:
        st.title("Loupe")
        st.error(t("sign_in.not_serving"), icon=":material/lock:")
        st.text(rule.refusal)  # shown as text: it quotes the configured address
        st.stop()
    if rule.mode == access.OIDC:
        return _oidc()
    signed = st.session_state.get(_SIGNED_IN)
    if isinstance(signed, access.SignedIn):
        _sign_out_button()
        return signed
    _password_form(settings.dashboard_password)
    st.stop()
    return None  # unreachable: st.stop() ends the script run


def _oidc() -> access.SignedIn:
    if not st.user.is_logged_in:
        st.title("Loupe")
        st.info(t("sign_in.sign_in_prompt"), icon=":material/lock:")
        st.button(t("sign_in.sign_in"), type="primary", on_click=st.login, key="sign-in-oidc")
        st.stop()
    try:
        signed = access.oidc_identity(dict(st.user.to_dict()))
    except AccessError as exc:
        st.error(str(exc))
        st.stop()
    if st.sidebar.button(t("sign_in.sign_out"), key="sign-out", icon=":material/logout:"):
        st.logout()
    return signed


def _password_form(expected: str) -> None:
    st.title("Loupe")
    st.caption(t("sign_in.password_intro"))
    with st.form("sign-in", border=True):
        name = st.text_input(t("sign_in.your_name"), key="sign-in-name", max_chars=access.MAX_NAME_CHARS)
        given = st.text_input(t("sign_in.password"), type="password", key="sign-in-password")
        submitted = st.form_submit_button(t("sign_in.sign_in"), type="primary", icon=":material/login:")
    if submitted:
        try:
            st.session_state[_SIGNED_IN] = access.sign_in_with_password(name, given, expected)
        except AccessError as exc:
            st.error(str(exc))
        else:
            st.rerun()


def _sign_out_button() -> None:
    if st.sidebar.button(t("sign_in.sign_out"), key="sign-out", icon=":material/logout:"):
        del st.session_state[_SIGNED_IN]
        st.rerun()


def reviewer_identity() -> str:
    """The signed-in analyst's identity, or this browser session's id where nobody signs in."""
    signed = st.session_state.get(_SIGNED_IN)
    if isinstance(signed, access.SignedIn):
        return signed.identity
    if st.user.get("is_logged_in"):
        try:
            return access.oidc_identity(dict(st.user.to_dict())).identity
        except AccessError:
            pass
    return session_id()
