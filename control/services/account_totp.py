"""Optional TOTP for users' web accounts (issue 19, "Accounts").

RFC 6238 as ``control.services.totp`` checks it (6 digits, 30-second steps, one step of clock
drift either way).  A code is accepted at most once: the step it was accepted for is
stored (``Account.totp_last_step``) and only a later step is accepted after it, by a
conditional update, so two requests racing with one code cannot both pass.  The secret is
stored ``SecretsBox``-encrypted.

Turning it on is two requests with nothing stored in between: ``start`` makes a secret and
seals it (encrypted with the box) for the settings form, and ``enable`` takes the sealed secret
back with one code from the user's app; a sealed secret cannot be forged without the box's key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyotp

from control.db import write_transaction
from control.errors import BadRequest, Conflict, Unauthorized
from control.models import Account
from control.services.secrets_box import DecryptionError, SecretsBox
from control.services.totp import matching_step

ISSUER = "Hermes Max"
"""The issuer authenticator apps show (Google Authenticator's Key Uri Format)."""

clock = time.time
"""Unix time, read when a call passes no ``now`` (tests set their own)."""


@dataclass(frozen=True)
class Enrolment:
    """A secret offered on the settings page.

    Attributes:
        uri: the ``otpauth://totp/...`` URI (for the QR code and manual entry).
        secret: the base32 secret (shown for typing into an app by hand).
        sealed: the secret encrypted with the box, round-tripped by the form to ``enable``.
    """

    uri: str
    secret: str
    sealed: str


def start(account: Account, box: SecretsBox) -> Enrolment:
    """Make a new secret for ``account`` (nothing is stored until ``enable``)."""
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=ISSUER)
    return Enrolment(uri=uri, secret=secret, sealed=box.encrypt(secret))


def _take(account: Account, step: int | None, **changes) -> bool:
    """Record ``step`` as used (with ``changes``) unless it is not later than the last one."""
    if step is None:
        return False
    with write_transaction():
        taken = (Account.update(totp_last_step=step, **changes)
                 .where((Account.id == account.id) & (Account.totp_last_step < step)).execute())
    if taken:
        account.totp_last_step = step
        for name, value in changes.items():
            setattr(account, name, value)
    return bool(taken)


def enable(account: Account, sealed: str, code: str, box: SecretsBox,
           now: float | None = None) -> None:
    """Turn TOTP on with the secret ``start`` sealed, confirmed by one current ``code``.

    Raises:
        Conflict: TOTP is on already.
        BadRequest: the sealed secret is not one of ours, or the code is wrong or used.
    """
    if account.totp_secret:
        raise Conflict("Two-step sign-in is already on.")
    try:
        secret = box.decrypt(sealed or "")
    except DecryptionError:
        raise BadRequest("Start again: this form has expired.", code="bad_totp_enrolment") from None
    step = matching_step(secret, code, clock() if now is None else now)
    if not _take(account, step, totp_secret=box.encrypt(secret)):
        raise BadRequest("That code is not right; enter the current one from your app.",
                         code="bad_totp_code")


def verify(account: Account, code: str, box: SecretsBox, now: float | None = None) -> bool:
    """Whether ``code`` is a current, unused code of ``account`` (then it is used up).

    Always True for an account without TOTP.
    """
    if not account.totp_secret:
        return True
    step = matching_step(box.decrypt(account.totp_secret), code, clock() if now is None else now)
    return _take(account, step)


def disable(account: Account, code: str, box: SecretsBox, now: float | None = None) -> None:
    """Turn TOTP off; needs a current, unused code.

    Raises:
        Unauthorized: the code is wrong or used (nothing changes).
    """
    if not account.totp_secret:
        return
    if not verify(account, code, box, now):
        raise Unauthorized("That code is not right; two-step sign-in stays on.",
                           code="bad_totp_code")
    with write_transaction():
        Account.update(totp_secret=None).where(Account.id == account.id).execute()
    account.totp_secret = None
