"""Web accounts through the real app: sign-up, log-in, log-out and password reset, with CSRF,
rate limits, cookie flags, session rotation, no account enumeration and no open redirect."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta

import pyotp
import pytest
from support.smtp import SmtpServer
from support.webhooks import row_counts

from control import create_app
from control.db import database
from control.models import Account, OutboxMail, PasswordReset, utcnow
from control.runtime import Runtime
from control.services import account_totp, mail
from control.web.accounts import LOGIN_REFUSED, safe_next

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PASSWORD = "correct horse battery"
TOKEN_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client, path: str) -> str:
    """The CSRF token of the form on ``path``, as a browser would read it."""
    page = client.get(path, headers=BROWSER)
    assert page.status_code == 200, (path, page.status_code)
    return TOKEN_INPUT.search(page.text).group(1)


def submit(client, path: str, data: dict, *, form_path: str | None = None, token: bool = True):
    """POST ``data`` to ``path`` like the browser's form would (with the page's CSRF token)."""
    if token:
        data = {"csrf_token": csrf_token(client, form_path or path), **data}
    return client.post(path, data=data, headers=BROWSER)


VERIFY_LINK = re.compile(r"https?://[^/\s]+(/signup/verify/[\w-]+)")


def sign_up(client, email: str = "ada@example.com", password: str = PASSWORD, path: str = "/signup"):
    """Sign up as a person does: the form, then the link in the confirmation e-mail.

    Returns the answer to the confirmation, or the form's answer when no link was mailed.  The
    confirmation mail leaves the outbox (delivered and read), so tests see only later mail.
    """
    mailed = len(outbox())
    answer = submit(client, path, {"email": email, "password": password, "confirm": password})
    found = [(m, VERIFY_LINK.search(m.body)) for m in outbox()[mailed:]]
    confirmation = next(((m, link.group(1)) for m, link in found if link), None)
    if confirmation is None:
        return answer
    with database.connection_context():
        confirmation[0].delete_instance()
    return submit(client, confirmation[1], {})


def log_in(client, email: str = "ada@example.com", password: str = PASSWORD, path: str = "/login",
           **extra):
    return submit(client, path, {"email": email, "password": password, **extra})


def log_out(client):
    return submit(client, "/logout", {}, form_path="/reset")


def signed_in(client) -> bool:
    """A signed-in visitor of /login is sent on (to /dashboard)."""
    return client.get("/login", headers=BROWSER).status_code == 302


def session_cookie(client) -> str | None:
    cookie = client.get_cookie("hermes_session")
    return cookie.value if cookie else None


def outbox(to: str | None = None) -> list[OutboxMail]:
    with database.connection_context():
        query = OutboxMail.select().order_by(OutboxMail.id)
        return list(query.where(OutboxMail.to_addr == to) if to else query)


def test_landing_page_shows_both_plans_and_sends_a_signed_in_user_on(client):
    page = client.get("/", headers=BROWSER)
    assert page.status_code == 200
    assert "$29" in page.text and "$79" in page.text
    assert 'href="/signup?plan=light"' in page.text and 'href="/signup?plan=heavy"' in page.text
    sign_up(client)
    assert client.get("/").headers["Location"] == "/dashboard"


def test_sign_up_signs_in_and_goes_to_checkout_for_the_chosen_plan(client, app):
    response = sign_up(client, email="Ada@Example.COM", path="/signup?plan=heavy")
    assert response.status_code == 302
    assert response.headers["Location"] == "/billing/checkout?plan=heavy"
    assert signed_in(client)
    with database.connection_context():
        account = Account.get()
        assert account.email == "ada@example.com" and account.password_hash.startswith("$argon2id$")
        assert PASSWORD not in account.password_hash
    other = app.test_client()
    assert sign_up(other, email="bob@example.com", path="/signup?plan=bogus").headers[
        "Location"] == "/dashboard"


@pytest.mark.parametrize(("data", "message"), [
    ({"email": "ada@example.com", "password": PASSWORD, "confirm": PASSWORD + "x"},
     "The two passwords differ."),
    ({"email": "ada@example.com", "password": "short", "confirm": "short"}, "Use at least 8 characters"),
    ({"email": "not-an-address", "password": PASSWORD, "confirm": PASSWORD}, "Invalid email"),
])
def test_a_refused_sign_up_explains_why_and_stores_nothing(client, data, message):
    before = row_counts()
    response = submit(client, "/signup", data)
    assert response.status_code == 400
    assert message in response.text
    assert 'aria-invalid="true"' in response.text
    assert row_counts() == before and not signed_in(client)


@pytest.mark.parametrize("path", ["/login", "/signup", "/reset", "/logout"])
def test_a_post_without_csrf_token_is_refused_and_stores_nothing(client, path):
    sign_up(client, email="owner@example.com")  # /logout needs someone to log out
    before = row_counts()
    data = {"email": "eve@example.com", "password": PASSWORD, "confirm": PASSWORD}
    response = client.post(path, data=data, headers=BROWSER)
    assert response.status_code == 400
    assert "Nothing was saved" in response.text and "text/html" in response.content_type
    assert row_counts() == before
    with database.connection_context():
        assert Account.get(Account.email == "owner@example.com").session_version == 0
    assert signed_in(client)  # the refused log-out did not log anyone out
    # API clients keep the JSON error body.
    assert client.post(path, data=data).json["error"] == "bad_request"


def test_a_forged_csrf_token_is_refused(client):
    before = row_counts()
    response = client.post("/signup", data={"csrf_token": "forged", "email": "eve@example.com",
                                            "password": PASSWORD, "confirm": PASSWORD},
                           headers=BROWSER)
    assert response.status_code == 400 and row_counts() == before


def test_repeated_bad_logins_are_rate_limited_with_retry_after(client):
    sign_up(client)
    log_out(client)
    token = csrf_token(client, "/login")
    statuses = [client.post("/login", headers=BROWSER, data={
        "csrf_token": token, "email": "ada@example.com", "password": f"wrong{i}"}).status_code
        for i in range(5)]
    assert statuses == [400] * 5
    blocked = client.post("/login", headers=BROWSER, data={
        "csrf_token": token, "email": "ada@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    assert "Too many attempts" in blocked.text and "text/html" in blocked.content_type
    assert not signed_in(client)  # even the right password waits
    # Pages themselves stay reachable: only POSTs count.
    assert client.get("/login").status_code == 200


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(client):
    sign_up(client)
    log_out(client)
    wrong = log_in(client, password="not the password")
    unknown = log_in(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 400
    assert "wrong e-mail or password" in wrong.text
    assert _main(wrong.text) == _main(unknown.text).replace("nobody@example.com", "ada@example.com")


def _main(html: str) -> str:
    """The page's <main>, without the per-request CSRF token."""
    main = html[html.index("<main"):html.index("</main>")]
    return TOKEN_INPUT.sub("", main)


def test_session_cookie_flags_over_http(client):
    response = sign_up(client)
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("hermes_session=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # http://127.0.0.1: a Secure cookie would never come back


def test_session_and_remember_cookies_are_secure_when_the_site_is_https(settings):
    secure = replace(settings, public_url="https://hermes.example")
    app = create_app(secure, Runtime(secure, upgrade_schema=True))
    try:
        client = app.test_client()
        sign_up(client)
        log_out(client)
        response = log_in(client, remember="y")
        cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
        for name in ("hermes_session", "remember_token"):
            assert all(flag in cookies[name] for flag in ("Secure", "HttpOnly", "SameSite=Lax")), name
    finally:
        app.extensions["hermes"].close()


def test_log_in_rotates_the_session_and_log_out_kills_the_old_cookie(client, app):
    sign_up(client)
    log_out(client)
    csrf_token(client, "/login")
    before = session_cookie(client)
    assert before
    assert log_in(client).status_code == 302
    after = session_cookie(client)
    assert after and after != before
    assert signed_in(client)

    log_out(client)
    assert not signed_in(client)
    replay = app.test_client()  # an attacker who copied the signed-in cookie
    replay.set_cookie("hermes_session", after)
    assert not signed_in(replay)


def test_security_headers_on_pages(client):
    headers = client.get("/", headers=BROWSER).headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "img-src 'self' data:" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example", "/\\evil.example",
                                    "https:/evil.example", "javascript:alert(1)", "/\tevil"])
def test_log_in_ignores_a_next_that_leaves_the_site(client, target):
    sign_up(client)
    log_out(client)
    response = log_in(client, path="/login?" + _query(target))
    assert response.headers["Location"] == "/dashboard"


def _query(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def test_log_in_follows_a_next_on_this_site(client):
    sign_up(client)
    log_out(client)
    assert log_in(client, path="/login?next=%2Fbilling%3Fx%3D1").headers["Location"] == "/billing?x=1"


@pytest.mark.parametrize(("target", "safe"), [
    ("/dashboard", "/dashboard"), ("/billing?plan=light", "/billing?plan=light"),
    ("//evil.example/x", None), ("/\\evil.example", None), ("http://evil.example", None),
    ("dashboard", None), ("", None), (None, None), ("/a\nb", None),
])
def test_safe_next(target, safe):
    assert safe_next(target) == safe


def test_sign_up_with_a_taken_address_does_not_say_so_and_tells_the_owner(client, app):
    sign_up(client)
    log_out(client)
    before = row_counts()
    response = sign_up(app.test_client(), email="ADA@example.com", password="another password")
    assert response.status_code == 200
    assert "Check your e-mail" in response.text
    assert not re.search(r"already|exists|taken|registered", _main(response.text),
                         re.IGNORECASE)
    assert row_counts() == {**before, "OutboxMail": before["OutboxMail"] + 1}
    (notice,) = outbox("ada@example.com")
    assert "tried to create a Hermes Max account" in notice.body and "/reset" in notice.body


def test_reset_request_answers_the_same_for_known_and_unknown_addresses(client):
    sign_up(client)
    log_out(client)
    known = submit(client, "/reset", {"email": "ada@example.com"})
    unknown = submit(client, "/reset", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert _main(known.text) == _main(unknown.text).replace("nobody@example.com", "ada@example.com")
    assert [m.to_addr for m in outbox()] == ["ada@example.com"]


def test_password_reset_end_to_end_over_smtp(client, app, settings):
    sign_up(client)
    with database.connection_context():
        old_version = Account.get().session_version
    old_session = session_cookie(client)
    other_browser = app.test_client()
    log_in(other_browser)
    assert signed_in(other_browser)

    stranger = app.test_client()
    assert submit(stranger, "/reset", {"email": "ada@example.com"}).status_code == 200
    with SmtpServer() as smtp, database.connection_context():
        assert mail.send_pending(replace(settings, smtp_url=f"smtp://127.0.0.1:{smtp.port}")) == 1
    (message,) = smtp.messages
    assert message["To"] == "ada@example.com"
    link = re.search(r"(\S+/reset/(\S+))", message.get_content())
    assert link.group(1).startswith(settings.public_url + "/reset/")
    path, token = link.group(1)[len(settings.public_url):], link.group(2)
    with database.connection_context():
        (reset,) = PasswordReset.select()
        assert reset.token_hash == hashlib.sha256(token.encode()).hexdigest() != token
        assert timedelta(minutes=59) < reset.expires_at - utcnow() <= timedelta(hours=1)

    page = stranger.get(path, headers=BROWSER)
    assert page.status_code == 200 and 'autocomplete="new-password"' in page.text
    new_password = "a brand new passphrase"
    done = submit(stranger, path, {"password": new_password, "confirm": new_password})
    assert done.status_code == 302 and done.headers["Location"] == "/dashboard"
    assert signed_in(stranger)

    # Every older session ended; the old cookie no longer works anywhere.
    assert not signed_in(other_browser)
    replay = app.test_client()
    replay.set_cookie("hermes_session", old_session)
    assert not signed_in(replay)
    with database.connection_context():
        assert Account.get().session_version > old_version

    fresh = app.test_client()
    assert log_in(fresh).status_code == 400  # the old password
    assert log_in(fresh, password=new_password).status_code == 302

    used = app.test_client().get(path, headers=BROWSER)
    assert used.status_code == 400 and "already used" in used.text
    assert 'href="/reset"' in used.text  # the way forward: ask for a new link


def test_an_expired_or_unknown_reset_link_is_a_clear_400(client):
    sign_up(client)
    log_out(client)
    submit(client, "/reset", {"email": "ada@example.com"})
    (notice,) = outbox("ada@example.com")
    path = re.search(r"/reset/\S+", notice.body).group(0)
    with database.connection_context():
        PasswordReset.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    before = row_counts()
    for target in (path, "/reset/unknown-token"):
        page = client.get(target, headers=BROWSER)
        assert page.status_code == 400 and "expired" in page.text
        posted = submit(client, target, {"password": "whatever pass", "confirm": "whatever pass"},
                        form_path="/reset")
        assert posted.status_code == 400
        assert client.get(target).json["error"] == "invalid_reset_link"
    assert row_counts() == before
    assert log_in(client).status_code == 302  # the password is unchanged


@pytest.mark.parametrize(("path", "fields"), [
    ("/signup", {"email": "email", "password": "new-password", "confirm": "new-password"}),
    ("/login", {"email": "email", "password": "current-password"}),
    ("/reset", {"email": "email"}),
])
def test_every_input_has_a_label_and_an_autocomplete_hint(client, path, fields):
    html = client.get(path, headers=BROWSER).text
    for name, autocomplete in fields.items():
        tag = re.search(rf'<input [^>]*\bid="{name}"[^>]*>', html).group(0)
        assert f'autocomplete="{autocomplete}"' in tag and "required" in tag
        assert f'<label for="{name}">' in html


# -- optional TOTP (issue 19) ---------------------------------------------------------------------

SECRET = re.compile(r'data-testid="totp-secret">([A-Z2-7]+)<')
SEALED = re.compile(r'id="sealed" name="sealed" type="hidden" value="([^"]+)"')


@pytest.fixture
def clock(monkeypatch):
    """The TOTP clock, moved by hand: ``clock[0]`` is the Unix time the app sees."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(account_totp, "clock", lambda: now[0])
    return now


def code_at(secret: str, when: float) -> str:
    return pyotp.TOTP(secret).at(when)


def turn_on_totp(client, clock) -> str:
    """Enable TOTP from the security page as a person does; returns the secret."""
    page = client.get("/dashboard/security", headers=BROWSER)
    assert page.status_code == 200 and 'data-testid="totp-state">Off' in page.text
    secret = SECRET.search(page.text).group(1)
    assert f"otpauth://totp/Hermes%20Max:ada%40example.com?secret={secret}" in page.text
    assert "<svg" in page.text  # the QR code
    sealed = SEALED.search(page.text).group(1)
    answer = submit(client, "/dashboard/security/totp", {
        "sealed": sealed, "code": code_at(secret, clock[0])}, form_path="/dashboard/security")
    assert answer.status_code == 303
    return secret


def test_totp_turned_on_makes_sign_in_ask_for_a_code_used_once(client, clock):
    sign_up(client)
    page = client.get("/dashboard/security", headers=BROWSER).text
    secret, sealed = SECRET.search(page).group(1), SEALED.search(page).group(1)
    wrong = submit(client, "/dashboard/security/totp", {"sealed": sealed, "code": "000000"},
                   form_path="/dashboard/security")
    assert wrong.status_code == 400 and "That code is not right" in wrong.text
    forged = submit(client, "/dashboard/security/totp",
                    {"sealed": secret, "code": code_at(secret, clock[0])},
                    form_path="/dashboard/security")
    assert forged.status_code == 400
    with database.connection_context():
        assert Account.get().totp_secret is None
    secret = turn_on_totp(client, clock)
    with database.connection_context():
        stored = Account.get().totp_secret
    assert stored and secret not in stored  # encrypted with the secrets box
    log_out(client)

    clock[0] += 30
    without = log_in(client)
    assert without.status_code == 400 and LOGIN_REFUSED in without.text and not signed_in(client)
    code = code_at(secret, clock[0])
    assert log_in(client, totp=code).status_code == 302 and signed_in(client)
    log_out(client)
    # The same code again, still within its window: refused (RFC 6238 section 5.2).
    replay = log_in(client, totp=code)
    assert replay.status_code == 400 and not signed_in(client)
    # An older step than the last one used is refused too, even within the drift allowed.
    assert log_in(client, totp=code_at(secret, clock[0] - 30)).status_code == 400
    clock[0] += 30
    assert log_in(client, totp=code_at(secret, clock[0])).status_code == 302


def test_turning_totp_off_needs_a_current_code(client, clock):
    sign_up(client)
    secret = turn_on_totp(client, clock)
    used = code_at(secret, clock[0])
    for code in ("000000", used):
        refused = submit(client, "/dashboard/security/totp/disable", {"code": code},
                         form_path="/dashboard/security")
        assert refused.status_code == 400 and "stays on" in refused.text
    assert 'data-testid="totp-state">On' in client.get("/dashboard/security").text
    clock[0] += 30
    off = submit(client, "/dashboard/security/totp/disable", {"code": code_at(secret, clock[0])},
                 form_path="/dashboard/security")
    assert off.status_code == 303
    log_out(client)
    assert log_in(client).status_code == 302


def test_the_security_page_needs_a_session(client):
    for path in ("/dashboard/security",):
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
