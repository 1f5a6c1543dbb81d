"""The dashboard's sign-in rule (core/access.py; issue #16 item 2): open on loopback with nothing configured,
sign-in wherever one is configured or the server is reachable from elsewhere, refused (with how to fix it)
when bound elsewhere with none configured; passwords compared as bytes."""
from __future__ import annotations

import pytest

from core import access
from core.errors import AccessError
from core.settings import load_settings


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", " 127.0.0.1 "])
def test_loopback_with_nothing_configured_is_open(address) -> None:
    assert access.is_loopback(address)
    assert access.access_rule(address, password="", oidc_configured=False).mode == access.OPEN


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "loupe.example.org"])
def test_bound_elsewhere_with_nothing_configured_refuses_and_says_how(address) -> None:
    assert not access.is_loopback(address)
    rule = access.access_rule(address, password="", oidc_configured=False)
    assert rule.mode == access.REFUSED
    for how in ("dashboard_password", "LOUPE_DASHBOARD_PASSWORD", "[auth]", "secrets.toml", "127.0.0.1"):
        assert how in rule.refusal, how
    assert (repr(address) if address else "every network interface") in rule.refusal


def test_a_configured_sign_in_is_required_wherever_the_server_listens() -> None:
    for address in ("127.0.0.1", "0.0.0.0"):
        assert access.access_rule(address, password="team", oidc_configured=False).mode == access.PASSWORD
        assert access.access_rule(address, password="team", oidc_configured=True).mode == access.OIDC
    missing = access.access_rule("0.0.0.0", password="", oidc_configured=True, authlib_installed=False)
    assert missing.mode == access.REFUSED and "Authlib" in missing.refusal


@pytest.mark.parametrize("password", ["s3cret", "pässwörd-🔑", "密码 with spaces"])
def test_passwords_are_compared_as_bytes(password) -> None:
    signed = access.sign_in_with_password("  Ada   Lovelace ", password, password)
    assert signed == access.SignedIn(identity="Ada Lovelace", method="password")
    for wrong in ("", "wrong", password[:-1], password + "x", password.upper() + "é", password.encode().decode("latin-1")):
        if wrong == password:
            continue
        with pytest.raises(AccessError, match="Wrong password"):
            access.sign_in_with_password("Ada", wrong, password)
    assert not access.password_matches("", "")  # no password configured never lets anyone in


@pytest.mark.parametrize(("name", "says"), [("", "Give your name"), ("   ", "Give your name"), ("x" * 61, "at most 60"),
                                            ("Ada\x00", "cannot be shown"), ("Ada\u200b", "cannot be shown")])
def test_a_name_is_required_and_must_be_showable(name, says) -> None:
    with pytest.raises(AccessError, match=says):
        access.sign_in_with_password(name, "pw", "pw")


def test_oidc_identity_is_the_email_else_the_name() -> None:
    assert access.oidc_identity({"email": "ada@example.org", "name": "Ada"}).identity == "ada@example.org"
    assert access.oidc_identity({"name": "Ada", "email": ""}).identity == "Ada"
    with pytest.raises(AccessError, match="did not say who you are"):
        access.oidc_identity({"is_logged_in": True})


def test_the_password_setting_reads_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LOUPE_DASHBOARD_PASSWORD", "pässwörd")
    assert load_settings().dashboard_password == "pässwörd"
    assert load_settings(dashboard_password="other").dashboard_password == "other"
