"""Signed-in dashboard users in tests: an account, a session made by POSTing ``/login``."""

from __future__ import annotations

import re

from control.db import database
from control.models import Machine, Tenant, utcnow
from control.services.accounts import create_account

PASSWORD = "correct horse battery staple"


def csrf_token(client, path: str) -> str:
    """Return the CSRF token of the form on ``path`` (as a browser would read it)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    tag = re.search(r'<input[^>]*name="csrf_token"[^>]*>', page.text).group(0)
    return re.search(r'value="([^"]+)"', tag).group(1)


def sign_in(client, email: str) -> Tenant:
    """Create an account for ``email``, log ``client`` in with it and return its tenant."""
    with database.connection_context():
        account = create_account(email, PASSWORD)
        tenant = Tenant.get_by_id(account.tenant_id)
    answer = client.post("/login", data={"email": email, "password": PASSWORD,
                                         "csrf_token": csrf_token(client, "/login")})
    assert answer.status_code == 302, answer.text
    return tenant


def make_ready(tenant: Tenant, plan: str = "light") -> None:
    """Give ``tenant`` a plan and a ready machine, as a paid checkout would."""
    with database.connection_context():
        Tenant.update(plan=plan, status="active").where(Tenant.id == tenant.id).execute()
        Machine.create(tenant=tenant, plan=plan, state="ready", ready_at=utcnow())
