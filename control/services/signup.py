"""Sign-up with a verified address (issue 19, findings 5 and 13).

A Stripe Payment Link, a subscription made in Stripe's dashboard or the Telegram-first flow
leave a paying tenant with an e-mail address and no web account.  Whoever signs up with that
address gets the tenant's agent, chats and billing, so a sign-up creates nothing at once: it
mails a single-use link to the address, and the account is created (and attached to that
tenant) only when the link is used (``finish_signup``).

The answer to a sign-up is the same whether the address is new, belongs to a paying tenant or
already has an account (OWASP Authentication Cheat Sheet, "Authentication and Error
Messages"): each path hashes the password once (Argon2id) before it looks anything up, and
each sends one e-mail (the link, or a note to the account's owner).

Tokens follow the password-reset pattern (``control.services.password_reset``): 32 random
bytes, only their SHA-256 stored, single use, expiring after ``SIGNUP_TTL``.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from control.db import write_transaction
from control.errors import BadRequest, Conflict
from control.models import Account, SignupRequest, Tenant, utcnow
from control.services import mail
from control.services.accounts import (
    check_password_rules,
    hash_password,
    normalize_email,
    open_account,
)
from control.services.password_reset import TOKEN_BYTES, token_hash

# A day to open the mail: sign-up mail is read later than a reset a person waits for, and the
# link only ever creates the account its sender asked for.
SIGNUP_TTL = timedelta(hours=24)
INVALID_LINK = "This sign-up link is invalid, expired or already used. Sign up again."
TAKEN = ("This address has a Hermes Max account already: log in, or ask for a new password "
         "if you forgot it.")


def start_signup(email: str, password: str, plan: str | None, public_url: str) -> str | None:
    """Mail a confirmation link for a new account, or a note to the owner of an existing one.

    Args:
        email: the address typed by the user (normalized here).
        password: plain text, checked by ``check_password_rules``; only its hash is stored.
        plan: ``light``/``heavy`` to go on to checkout after confirming, or None.
        public_url: the site's base URL; the link is ``<public_url>/signup/verify/<token>``.

    Returns:
        The link's token when one was mailed, else None (callers answer the same either way).

    Raises:
        BadRequest: invalid e-mail or password (says nothing about accounts).
    """
    email = normalize_email(email)
    check_password_rules(password)
    password_hash = hash_password(password)  # before any look-up: every path costs one hash
    base = public_url.rstrip("/")
    with write_transaction():
        account = Account.get_or_none(Account.email == email)
        tenant = Tenant.get_or_none(Tenant.email == email)
        if account is not None:
            if not account.tenant.deleted_at:
                _tell_owner(account.email, base)
            return None
        if tenant is not None and (tenant.deleted_at or tenant.accounts.exists()):
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        SignupRequest.create(email=email, password_hash=password_hash, plan=plan,
                             token_hash=token_hash(token), expires_at=utcnow() + SIGNUP_TTL)
        mail.queue_mail(email, "Confirm your e-mail address for Hermes Max", (
            "Someone (hopefully you) signed up for Hermes Max with this e-mail address.\n\n"
            f"Open this link within {int(SIGNUP_TTL.total_seconds() // 3600)} hours to confirm "
            f"the address and finish creating your account:\n\n{base}/signup/verify/{token}\n\n"
            "The link works once. If you did not sign up, ignore this e-mail: no account is "
            "created.\n"))
    return token


def _tell_owner(email: str, base: str) -> None:
    """Queue a note to an account's owner: someone tried to sign up with the address (OWASP
    Authentication Cheat Sheet: tell the owner, not the visitor)."""
    mail.queue_mail(email, "Someone tried to sign up with your e-mail address", (
        "Someone tried to create a Hermes Max account with this e-mail address, which "
        "already has one.\n\n"
        f"If it was you, log in at {base}/login or, if you forgot your password, "
        f"ask for a new one at {base}/reset.\n\n"
        "If it was not you, you can ignore this e-mail: nothing has changed.\n"))


def valid_signup(token: str) -> SignupRequest:
    """Return the unused, unexpired sign-up for ``token``.

    Raises:
        BadRequest: unknown, expired or already used (``invalid_signup_link``, one message).
    """
    request = SignupRequest.get_or_none(SignupRequest.token_hash == token_hash(token or ""))
    if request is None or request.used_at is not None or request.expires_at <= utcnow():
        raise BadRequest(INVALID_LINK, code="invalid_signup_link")
    return request


def finish_signup(token: str) -> tuple[Account, str | None]:
    """Create the account of a confirmed sign-up; the address is proven, so the account is
    attached to the tenant with that address if there is one (``open_account``).  The link and
    every other open sign-up link of the address are used up.

    Returns:
        ``(account, plan)``: the new account and the plan chosen at sign-up (or None).

    Raises:
        BadRequest: invalid link (``valid_signup``).
        Conflict: the address got an account in the meantime (``TAKEN``; the person has just
            proven the address, so saying so reveals nothing to a stranger).
    """
    with write_transaction():
        request = valid_signup(token)
        SignupRequest.update(used_at=utcnow()).where(
            (SignupRequest.email == request.email) & SignupRequest.used_at.is_null()).execute()
        try:
            account = open_account(request.email, request.password_hash)
        except Conflict:
            raise Conflict(TAKEN, code="address_taken") from None
    return account, request.plan
