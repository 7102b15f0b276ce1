"""The front door's account pages: landing, sign-up, log-in, log-out, password reset and
two-step sign-in (TOTP, ``control.services.account_totp``) on ``/dashboard/security``.

Thin handlers over ``control.services.accounts`` and ``control.services.password_reset``.
Every form carries a CSRF token (flask-wtf); the POSTs that take a password or an address are
rate limited per client (IPv4 address or IPv6 /64) and per e-mail address, before any password
is hashed; no answer says whether an e-mail address has an account (OWASP Authentication Cheat
Sheet, "Authentication and Error Messages").
"""

from __future__ import annotations

from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from control.db import write_transaction
from control.errors import BadRequest, Conflict, Unauthorized
from control.models import Account
from control.services import account_totp, password_reset
from control.services import signup as signup_service
from control.services.accounts import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    WebUser,
    authenticate,
    end_sessions,
)
from control.web.auth import SESSION_LIFETIME, account_key, limiter

bp = Blueprint("accounts", __name__)

# Per client address and route, on POST only.  Five tries a minute is plenty for a person who
# mistypes; twenty an hour caps a guessing script at 480 a day per address, far below NIST SP
# 800-63B 5.2.2's ceiling of 100 consecutive failures per account, and slows the address
# probing that sign-up and reset could otherwise be used for (OWASP Authentication Cheat
# Sheet, "Protect Against Automated Attacks").
AUTH_LIMITS = "5 per minute; 20 per hour"
# Per account (the form's e-mail address), whatever network the tries come from (a botnet, or
# the 2^64 addresses of one IPv6 /64).  Failed log-ins only: NIST SP 800-63B 5.2.2 allows at
# most 100 consecutive failures per account; ten an hour keeps a guesser far below that while
# the owner, who knows the password, is never counted.
FAILED_LOGINS_PER_ACCOUNT = "10 per hour; 100 per day"
# Sign-up and reset mail the address each time: three an hour stops mail-bombing a victim
# (OWASP Forgot Password Cheat Sheet) and leaves a person room to ask again.
MAIL_LIMITS_PER_ADDRESS = "3 per hour; 10 per day"
# The plans and their monthly prices in US dollars (DESIGN.md, "Plans and sizes").
PLANS = {"light": 29, "heavy": 79}
AFTER_LOGIN = "/dashboard"
PASSWORD_LENGTH = f"Use at least {MIN_PASSWORD} characters (at most {MAX_PASSWORD})."
# One answer for every refused log-in, so it never tells which part was wrong (a right
# password with a wrong code included).
LOGIN_REFUSED = "wrong e-mail or password, or wrong authenticator code"


class SignupForm(FlaskForm):
    """E-mail, password and its confirmation."""

    email = EmailField("E-mail", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=MIN_PASSWORD, max=MAX_PASSWORD, message=PASSWORD_LENGTH)])
    confirm = PasswordField("Confirm password", validators=[
        DataRequired(), EqualTo("password", message="The two passwords differ.")])


class LoginForm(FlaskForm):
    """E-mail, password and "keep me signed in"."""

    email = EmailField("E-mail", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    totp = StringField("Authenticator code (if you turned on two-step sign-in)",
                       validators=[Length(max=16)])
    remember = BooleanField("Keep me signed in for 14 days")


class TotpForm(FlaskForm):
    """One code from the authenticator app, and the sealed secret when turning it on."""

    code = StringField("Code from your authenticator app", validators=[DataRequired(), Length(max=16)])
    sealed = HiddenField()


class ResetRequestForm(FlaskForm):
    """The address to send a reset link to."""

    email = EmailField("E-mail", validators=[DataRequired(), Email()])


class ResetForm(FlaskForm):
    """The new password and its confirmation."""

    password = PasswordField("New password", validators=[
        DataRequired(), Length(min=MIN_PASSWORD, max=MAX_PASSWORD, message=PASSWORD_LENGTH)])
    confirm = PasswordField("Confirm new password", validators=[
        DataRequired(), EqualTo("password", message="The two passwords differ.")])


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path on this site (``/...``), else None.

    Refuses absolute URLs, scheme-relative ``//host`` and ``/\\host`` (browsers read a
    backslash as a slash) and control characters: the open-redirect cases of OWASP's
    Unvalidated Redirects and Forwards Cheat Sheet.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(ch) < 0x20 or ch == "\\" for ch in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _plan_arg() -> str | None:
    plan = request.args.get("plan")
    return plan if plan in PLANS else None


def _destination(plan: str | None) -> str:
    return f"/billing/checkout?plan={plan}" if plan else AFTER_LOGIN


def _log_in(account: Account, remember: bool) -> None:
    """Start a new session for ``account``.

    The old session's contents are dropped first, so the cookie issued after log-in shares
    nothing with the one before (session fixation; OWASP Session Management Cheat Sheet,
    "Renew the Session ID After Any Privilege Level Change").  The CSRF token is renewed with it.
    """
    session.clear()
    session.permanent = remember
    login_user(WebUser(account), remember=remember, duration=SESSION_LIFETIME)


def _settings():
    return current_app.extensions["hermes"].settings


def _box():
    return current_app.extensions["hermes"].secrets_box


def _form_page(template: str, form: FlaskForm, **context):
    """Render a form page: 200 when shown, 400 when a submitted form was refused."""
    status = 400 if form.is_submitted() else 200
    return render_template(template, form=form, **context), status


@bp.get("/")
def landing():
    """What Hermes Max is and the two plans; a signed-in user goes to the dashboard."""
    if current_user.is_authenticated:
        return redirect(AFTER_LOGIN)
    return render_template("accounts/landing.html", plans=PLANS,
                           budgets=_settings().plan_budget_cents)


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
@limiter.limit(MAIL_LIMITS_PER_ADDRESS, methods=["POST"], key_func=account_key)
def signup():
    """Mail a link that finishes the sign-up (``control.services.signup``); the account exists,
    and checkout (``?plan=light|heavy``) follows, once the link is used.

    Every accepted form gets the same "check your e-mail" page: for a new address, one whose
    tenant paid already and one that has an account (its owner gets a note instead).
    """
    plan = _plan_arg()
    if current_user.is_authenticated:
        return redirect(_destination(plan))
    form = SignupForm()
    if form.validate_on_submit():
        try:
            signup_service.start_signup(form.email.data or "", form.password.data or "", plan,
                                        _settings().public_url)
        except BadRequest as exc:
            form.email.errors = [*form.email.errors, exc.message]
        else:
            return render_template("accounts/check_email.html", email=form.email.data)
    return _form_page("accounts/signup.html", form, plan=plan, prices=PLANS,
                      min_password=MIN_PASSWORD)


@bp.route("/signup/verify/<token>", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
def signup_verify(token: str):
    """Finish a sign-up from its mailed link: GET shows one button, POST creates the account,
    signs in and goes on to checkout or the dashboard (400 page for a bad link).

    A GET changes nothing, so mail scanners that open links cannot use one up.
    """
    pending = signup_service.valid_signup(token)
    form = FlaskForm()  # the CSRF token only
    if form.validate_on_submit():
        account, plan = signup_service.finish_signup(token)
        _log_in(account, remember=False)
        return redirect(_destination(plan))
    return _form_page("accounts/signup_verify.html", form, token=token, email=pending.email)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
@limiter.limit(FAILED_LOGINS_PER_ACCOUNT, methods=["POST"], key_func=account_key,
               deduct_when=lambda response: response.status_code != 302)
def login():
    """Sign in; then ``next`` (a path on this site only) or the dashboard."""
    target = safe_next(request.args.get("next")) or AFTER_LOGIN
    if current_user.is_authenticated:
        return redirect(target)
    form = LoginForm()
    if form.validate_on_submit():
        try:
            account = authenticate(form.email.data or "", form.password.data or "")
            if not account_totp.verify(account, form.totp.data or "", _box()):
                raise Unauthorized(LOGIN_REFUSED)
        except Unauthorized:
            form.form_errors.append(LOGIN_REFUSED)
        else:
            _log_in(account, remember=form.remember.data)
            return redirect(target)
    return _form_page("accounts/login.html", form, next=safe_next(request.args.get("next")))


@bp.post("/logout")
def logout():
    """Sign out: the session ends here and, since sessions are signed cookies with no record
    on the server, every other session of the account ends too (``session_version``)."""
    if current_user.is_authenticated:
        with write_transaction():
            end_sessions(current_user.account)
    logout_user()
    session.clear()
    return redirect(url_for("accounts.landing"), code=303)


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
@limiter.limit(MAIL_LIMITS_PER_ADDRESS, methods=["POST"], key_func=account_key)
def reset_request():
    """Ask for a reset link; the same answer whether or not the address has an account."""
    form = ResetRequestForm()
    if form.validate_on_submit():
        try:
            password_reset.request_reset(form.email.data or "", _settings().public_url)
        except BadRequest as exc:
            form.email.errors = [*form.email.errors, exc.message]
        else:
            return render_template("accounts/reset_sent.html", email=form.email.data)
    return _form_page("accounts/reset_request.html", form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
def reset_form(token: str):
    """Choose a new password with a reset link; the link works once (400 page otherwise)."""
    password_reset.valid_reset(token)
    form = ResetForm()
    if form.validate_on_submit():
        try:
            account = password_reset.finish_reset(token, form.password.data or "")
        except BadRequest as exc:
            if exc.code == "invalid_reset_link":
                raise
            form.password.errors = [*form.password.errors, exc.message]
        else:
            _log_in(account, remember=False)
            return redirect(AFTER_LOGIN)
    return _form_page("accounts/reset_form.html", form, token=token, min_password=MIN_PASSWORD)


def _security_page(form: TotpForm, status: int = 200):
    account = current_user.account
    enrolment = None if account.totp_secret else account_totp.start(account, _box())
    if enrolment is not None:
        form.sealed.data = enrolment.sealed
    qr_svg = enrolment and segno.make(enrolment.uri, error="m").svg_inline(
        scale=4, dark="#e6e8ee", light="#171a21", title="QR code for your authenticator app")
    return render_template("dashboard/security.html", form=form, enabled=bool(account.totp_secret),
                           enrolment=enrolment, qr_svg=qr_svg), status


@bp.get("/dashboard/security")
@login_required
def security():
    """Two-step sign-in: when off, a new secret as an ``otpauth://`` URI and QR code with a
    form for one code to turn it on; when on, a form for one code to turn it off."""
    return _security_page(TotpForm())


@bp.post("/dashboard/security/totp")
@login_required
@limiter.limit(AUTH_LIMITS)
def totp_enable():
    """Turn TOTP on with the page's sealed secret and one current code (400 page when wrong)."""
    form = TotpForm()
    if form.validate_on_submit():
        try:
            account_totp.enable(current_user.account, form.sealed.data or "", form.code.data or "",
                                _box())
        except (BadRequest, Conflict) as exc:
            form.code.errors = [*form.code.errors, exc.message]
        else:
            flash("Two-step sign-in is on: sign-in now asks for a code from your app.")
            return redirect(url_for("accounts.security"), code=303)
    return _security_page(form, 400)


@bp.post("/dashboard/security/totp/disable")
@login_required
@limiter.limit(AUTH_LIMITS)
def totp_disable():
    """Turn TOTP off; needs one current code (400 page when wrong)."""
    form = TotpForm()
    if form.validate_on_submit():
        try:
            account_totp.disable(current_user.account, form.code.data or "", _box())
        except Unauthorized as exc:
            form.code.errors = [*form.code.errors, exc.message]
        else:
            flash("Two-step sign-in is off.")
            return redirect(url_for("accounts.security"), code=303)
    return _security_page(form, 400)
