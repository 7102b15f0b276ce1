"""Mission-control operators (issue 21): accounts apart from users, with roles and TOTP.

Roles, each allowed what the one before it is: ``viewer`` reads every page; ``operator``
also handles attention items, dead letters and provisioning retries, and reprovisions and
resizes machines; ``admin`` also deprovisions machines and reads the audit trail.
``require`` is the one place these rules live.

Sign-in needs the password (Argon2id, as web accounts: ``control.services.accounts``) and a
current TOTP code (RFC 6238, as ``control.services.totp`` checks it); a code, once accepted, is
never accepted again (RFC 6238 section 5.2).  The TOTP secret is stored
``SecretsBox``-encrypted.  Operators are managed only from the command line
(``hermes operators``); each change writes an audit row.
"""

from __future__ import annotations

import time

import pyotp

from control.db import write_transaction
from control.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from control.models import Operator, utcnow
from control.services import audit
from control.services.accounts import (
    check_password_rules,
    hash_password,
    needs_rehash,
    normalize_email,
    password_holder,
)
from control.services.secrets_box import SecretsBox
from control.services.totp import matching_step

ROLES = ("viewer", "operator", "admin")
#: The least role each action needs (the module docstring explains the split).
ACTIONS = {
    "read": "viewer",
    "attention.acknowledge": "operator", "attention.assign": "operator",
    "attention.snooze": "operator", "attention.resolve": "operator",
    "dead_letter.requeue": "operator", "dead_letter.discard": "operator",
    "provisioning.retry": "operator",
    "machine.reprovision": "operator", "machine.resize": "operator", "machine.restart": "operator",
    "machine.pause": "operator", "machine.resume": "operator",
    "machine.deprovision": "admin",
    "audit.read": "admin",
}
#: The issuer shown in authenticator apps (Google Authenticator's Key Uri Format).
TOTP_ISSUER = "Hermes Max ops"



def check_role(role: str) -> str:
    """Return ``role``; raises BadRequest unless it is one of ``ROLES``."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    return role


def allowed(operator: Operator, action: str) -> bool:
    """Whether ``operator``'s role may do ``action`` (a key of ``ACTIONS``; unknown: no)."""
    need = ACTIONS.get(action)
    return need is not None and ROLES.index(operator.role) >= ROLES.index(need)


def require(operator: Operator, action: str) -> None:
    """Raises Forbidden unless ``allowed(operator, action)``."""
    if not allowed(operator, action):
        raise Forbidden(f"the {operator.role} role may not do {action}")


def provisioning_uri(email: str, secret: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans for ``secret``."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def add(email: str, role: str, password: str, box: SecretsBox,
        actor: audit.Actor) -> tuple[Operator, str]:
    """Create an operator; audited as ``operator.add``.

    Args:
        email: the operator's address (normalized here).
        role: one of ``ROLES``.
        password: plain text, ``accounts.check_password_rules``.
        box: encrypts the new TOTP secret.
        actor: who adds them.

    Returns:
        ``(operator, otpauth URI)``: the URI is shown once and never stored in clear.

    Raises:
        BadRequest: bad e-mail, role or password.
        Conflict: an operator with this e-mail exists.
    """
    email, role = normalize_email(email), check_role(role)
    check_password_rules(password)
    secret = pyotp.random_base32()
    password_hash = hash_password(password)
    with write_transaction():
        if Operator.get_or_none(Operator.email == email) is not None:
            raise Conflict(f"operator {email} exists")
        operator = Operator.create(email=email, role=role, password_hash=password_hash,
                                   totp_secret=box.encrypt(secret))
        audit.record(actor, "operator.add", f"operator:{email}", None, {"role": role})
    return operator, provisioning_uri(email, secret)


def listing() -> list[Operator]:
    """Every operator, by e-mail."""
    return list(Operator.select().order_by(Operator.email))


def get(email: str) -> Operator:
    """The operator with ``email``; raises NotFound."""
    operator = Operator.get_or_none(Operator.email == email.strip().lower())
    if operator is None:
        raise NotFound(f"no operator {email}")
    return operator


def remove(email: str, actor: audit.Actor) -> None:
    """Delete an operator (their sessions end with the row); audited as ``operator.remove``.

    Raises:
        NotFound: no such operator.
    """
    with write_transaction():
        operator = get(email)
        operator.delete_instance()
        audit.record(actor, "operator.remove", f"operator:{operator.email}",
                     {"role": operator.role}, None)


def reset_totp(email: str, box: SecretsBox, actor: audit.Actor) -> str:
    """Give an operator a new TOTP secret and end their sessions; audited as
    ``operator.reset_totp``.

    Returns:
        The new ``otpauth://`` URI (shown once).

    Raises:
        NotFound: no such operator.
    """
    secret = pyotp.random_base32()
    with write_transaction():
        operator = get(email)
        Operator.update(totp_secret=box.encrypt(secret), totp_last_step=0,
                        session_version=Operator.session_version + 1).where(
            Operator.id == operator.id).execute()
        audit.record(actor, "operator.reset_totp", f"operator:{operator.email}")
    return provisioning_uri(operator.email, secret)


def authenticate(email: str, password: str, code: str, box: SecretsBox,
                 now: float | None = None) -> Operator:
    """Return the operator whose e-mail, password and current TOTP code match.

    Args:
        email, password: as typed.
        code: the 6-digit TOTP code.
        box: decrypts the TOTP secret.
        now: Unix time (tests pass one); default the clock.

    Raises:
        Unauthorized: anything wrong, including a code already used (one message, so a
            guesser learns nothing about which part failed).
    """
    operator = password_holder(Operator, email, password)
    refused = Unauthorized("wrong e-mail, password or code")
    if operator is None:
        raise refused
    step = matching_step(box.decrypt(operator.totp_secret), code,
                         time.time() if now is None else now)
    if step is None:
        raise refused
    with write_transaction():
        # Conditional update: of two sign-ins racing with one code, one wins.
        taken = (Operator.update(totp_last_step=step, last_login_at=utcnow())
                 .where((Operator.id == operator.id) & (Operator.totp_last_step < step))
                 .execute())
    if not taken:
        raise refused
    if needs_rehash(operator.password_hash):
        Operator.update(password_hash=hash_password(password)).where(
            Operator.id == operator.id).execute()
    return Operator.get_by_id(operator.id)


def load(operator_id: int, session_version: int) -> Operator | None:
    """The operator of a session, or None when they were removed or their sessions ended."""
    operator = Operator.get_or_none(Operator.id == operator_id)
    if operator is None or operator.session_version != session_version:
        return None
    return operator


def end_sessions(operator: Operator) -> None:
    """End every session of ``operator`` (bumps ``session_version``)."""
    Operator.update(session_version=Operator.session_version + 1).where(
        Operator.id == operator.id).execute()
