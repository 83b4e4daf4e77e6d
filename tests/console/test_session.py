"""The console's session cookie and CSRF token: signed with a key derived from the admin key,
expiring server-side, bound to one session; and the cross-site test on Sec-Fetch-Site / Origin."""

from __future__ import annotations

from proxy.console import session as sessions

KEY = sessions.signing_key("the-admin-key")
NOW = 1_800_000_000.0


def test_a_cookie_is_accepted_by_any_process_that_knows_the_admin_key() -> None:
    cookie, issued = sessions.issue(KEY, NOW)
    again = sessions.signing_key("the-admin-key")  # another worker derives the same key
    assert sessions.verify(again, cookie, NOW + 1) == issued


def test_changing_the_admin_key_signs_everyone_out() -> None:
    cookie, _ = sessions.issue(KEY, NOW)
    assert sessions.verify(sessions.signing_key("a-new-admin-key"), cookie, NOW + 1) is None


def test_the_signing_key_is_not_the_admin_key() -> None:
    assert b"the-admin-key" not in KEY and len(KEY) == 32


def test_a_session_expires_after_twelve_hours_whatever_the_browser_keeps() -> None:
    cookie, _ = sessions.issue(KEY, NOW)
    assert sessions.verify(KEY, cookie, NOW + sessions.SESSION_SECONDS - 1) is not None
    assert sessions.verify(KEY, cookie, NOW + sessions.SESSION_SECONDS) is None
    assert sessions.verify(KEY, cookie, NOW - 3600) is None  # issued in the future: refused too


def test_a_tampered_or_malformed_cookie_is_refused() -> None:
    cookie, _ = sessions.issue(KEY, NOW)
    version, issued, nonce, signature = cookie.split(".")
    later = f"{version}.{int(issued) + 3600}.{nonce}.{signature}"  # an extended session
    for bad in (later, cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), "", "v1", "x" * 300, "v1.abc.n.sig", None):
        assert sessions.verify(KEY, bad, NOW) is None, bad


def test_the_csrf_token_belongs_to_one_session() -> None:
    _, one = sessions.issue(KEY, NOW)
    _, other = sessions.issue(KEY, NOW)
    token = sessions.csrf_token(KEY, one)
    assert sessions.csrf_ok(KEY, one, token)
    assert not sessions.csrf_ok(KEY, other, token)
    assert not sessions.csrf_ok(KEY, one, None)
    assert not sessions.csrf_ok(KEY, one, "")
    assert not sessions.csrf_ok(KEY, one, token.upper())


def test_cross_site_is_judged_by_sec_fetch_site_then_origin() -> None:
    here = "https://gateway.example"
    assert not sessions.cross_site(None, "same-origin", here)
    assert not sessions.cross_site("null", "same-origin", here)  # Chromium's Origin under some referrer policies
    assert not sessions.cross_site(None, "none", here)  # typed in the address bar
    for site in ("same-site", "cross-site"):
        assert sessions.cross_site(here, site, here)
    assert sessions.cross_site("https://evil.example", None, here)
    assert sessions.cross_site("null", None, here)
    assert not sessions.cross_site(here + "/", None, here)
    assert not sessions.cross_site(None, None, here)  # not a browser: the CSRF token still decides
