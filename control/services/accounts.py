"""Web accounts: sign-up, password checks and the session identity (issue #10).

Passwords are hashed with Argon2id (argon2-cffi's ``PasswordHasher`` defaults, RFC 9106's
second recommended parameter set).  Failures never say whether an e-mail address has an
account (OWASP Authentication Cheat Sheet, "Authentication and Error Messages").
"""

from __future__ import annotations

from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email

from control.db import write_transaction
from control.errors import BadRequest, Conflict, Unauthorized
from control.models import Account, Operator, Tenant, utcnow

# NIST SP 800-63B 5.1.1.2: at least 8 characters; 64+ must be allowed.  Argon2 hashes any
# length, the cap only bounds the work one request can cause.
MIN_PASSWORD = 8
MAX_PASSWORD = 256

_hasher = PasswordHasher()
# Verified when the e-mail is unknown, so both paths cost one Argon2 verification.
_DUMMY_HASH = _hasher.hash("not-a-password-of-anyone")
Holder = TypeVar("Holder", Account, Operator)
"""A row signed in with an e-mail and password (``password_holder``)."""


class WebUser:
    """The flask-login user: an ``Account`` with its tenant.

    ``get_id()`` is ``"<account id>.<session_version>"``: a session issued before the
    version was bumped no longer loads (``load_user``).
    """

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, account: Account):
        self.account = account

    @property
    def tenant(self) -> Tenant:
        """The account's tenant."""
        return self.account.tenant

    def get_id(self) -> str:
        return f"{self.account.id}.{self.account.session_version}"


def load_user(user_id: str) -> WebUser | None:
    """flask-login's user loader: the ``WebUser`` for a session id, or None when the account
    is gone, deleted or its ``session_version`` moved on."""
    account_id, _, version = (user_id or "").partition(".")
    if not account_id.isdigit() or not version.isdigit():
        return None
    account = Account.get_or_none(Account.id == int(account_id))
    if account is None or account.session_version != int(version) or account.tenant.deleted_at:
        return None
    return WebUser(account)


def normalize_email(email: str) -> str:
    """Return the address in its normalized, lower-cased form.

    Raises:
        BadRequest: not a syntactically valid e-mail address (no DNS lookup is made).
    """
    try:
        valid = validate_email(email or "", check_deliverability=False)
    except EmailNotValidError as exc:
        raise BadRequest(f"invalid e-mail address: {exc}") from None
    return valid.normalized.lower()


def check_password_rules(password: str) -> None:
    """Raises BadRequest unless ``MIN_PASSWORD <= len(password) <= MAX_PASSWORD``."""
    if not MIN_PASSWORD <= len(password or "") <= MAX_PASSWORD:
        raise BadRequest(f"the password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    """Return the Argon2id PHC string of ``password``."""
    return _hasher.hash(password)


def password_holder(model: type[Holder], email: str, password: str) -> Holder | None:
    """The ``model`` row (an ``Account`` or ``Operator``) with the address ``email`` (normalized
    here) whose password is ``password``, or None.

    Exactly one Argon2 verification either way (against a dummy hash when the address is
    invalid or unknown), so the time taken does not tell whether an address has a row.
    """
    try:
        email = normalize_email(email)
    except BadRequest:
        email = ""
    row = model.get_or_none(model.email == email) if email else None
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return row


def needs_rehash(password_hash: str) -> bool:
    """True when ``password_hash`` was made with other Argon2 parameters than ``hash_password``
    uses now (store a new hash once the password has been verified)."""
    return _hasher.check_needs_rehash(password_hash)


def create_account(email: str, password: str) -> Account:
    """Create the web account of an address its owner has proven (tests, ``bench/``); the web
    sign-up goes through ``control.services.signup``, which mails a link first.

    Args:
        email: the address (normalized here).
        password: plain text, checked by ``check_password_rules``.

    Returns:
        The new ``Account`` (see ``open_account``).

    Raises:
        BadRequest: invalid e-mail or password.
        Conflict: an account already uses this e-mail.
    """
    email = normalize_email(email)
    check_password_rules(password)
    return open_account(email, hash_password(password))


def open_account(email: str, password_hash: str) -> Account:
    """Create the web account for a verified address and attach it to the tenant with that
    address (a paid checkout, Payment Link or the Telegram-first flow may have made one), or to
    a new tenant.

    Only for an address whose owner has proven it: attaching gives the account that tenant's
    agent, chats and billing (issue 19, finding 5).

    Args:
        email: a normalized address (``normalize_email``).
        password_hash: the Argon2id PHC string (``hash_password``).

    Returns:
        The new ``Account``.

    Raises:
        Conflict: an account already uses this e-mail, the tenant with it has one, or that
            tenant was deleted (the web layer must not reveal which).
    """
    with write_transaction():
        if Account.get_or_none(Account.email == email) is not None:
            raise Conflict("an account already uses this e-mail address")
        tenant = Tenant.get_or_none(Tenant.email == email)
        if tenant is None:
            tenant = Tenant.create(email=email)
        elif Account.get_or_none(Account.tenant == tenant) is not None or tenant.deleted_at:
            raise Conflict("an account already uses this e-mail address")
        return Account.create(tenant=tenant, email=email, password_hash=password_hash)


def authenticate(email: str, password: str) -> Account:
    """Return the account whose e-mail and password match; rehash an outdated hash.

    Raises:
        Unauthorized: unknown e-mail, wrong password or deleted account (one message).
    """
    account = password_holder(Account, email, password)
    if account is None or account.tenant.deleted_at:
        raise Unauthorized("wrong e-mail or password")
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    account.last_login_at = utcnow()
    account.save()
    return account


def end_sessions(account: Account) -> None:
    """Invalidate every session of ``account`` (bumps ``session_version``)."""
    Account.update(session_version=Account.session_version + 1).where(
        Account.id == account.id).execute()
    account.session_version += 1
