"""Per-tenant Redis ACL users: each agent may touch only its own tenant's bus keys.

The control plane (admin connection) writes every ``hermes:messages:{tenant}`` stream and
reads every ``hermes:events:{tenant}`` stream.  A tenant's agent connects as
``hermes-tenant-{tenant}`` with a random password, and may only (Redis 7 ACL rules and
selectors, https://redis.io/docs/management/security/acl/):

* consume ``hermes:messages:{tenant}`` through a consumer group: ``XREADGROUP``, ``XACK``,
  ``XAUTOCLAIM``, ``XPENDING``, ``XGROUP CREATE``, ``XLEN`` (root permissions).  It cannot
  ``XADD`` there, so an agent can never forge inbound user messages, and it cannot read the
  control plane's idempotency keys ``hermes:messages:{tenant}:idem:*``;
* move a bad message aside: ``XADD`` to ``hermes:messages:{tenant}:dead`` (selector), with
  ``MULTI``/``EXEC`` so the dead-letter write and its ``XACK`` are one transaction, or through
  ``hermes_append`` with an idempotency key (the agent's dead letters after its last retry);
* append to ``hermes:events:{tenant}`` through ``RedisBus.append``: ``FCALL`` of the functions
  the admin loads (``wire.redis_bus.load_functions``; they run with this user's ACL), which
  need ``XADD``, ``XLEN``, ``XINFO GROUPS`` on that stream and ``GET``/``SET`` on its
  idempotency keys ``hermes:events:{tenant}:idem:*`` (selectors; ``SET`` never on the stream);
* ``PING`` (and ``SELECT`` when the bus lives in a database other than 0).

No scripts and no function management (issue #19, finding 3): no ``EVAL``/``EVALSHA``/
``SCRIPT``/``FUNCTION``, so a tenant cannot run ``while true do end`` and leave the shared Redis
BUSY for everyone; ``FCALL`` reaches only the admin's functions, whose ``hermes_append`` refuses
entries over ``MAX_ENTRY_BYTES`` and clamps the stream length.  A plain ``XADD`` or ``SET`` on
the tenant's own keys stays possible (Redis checks a function's commands against its caller's
ACL, so the function needs them); roles/redis caps every argument at 1 MiB
(``proto-max-bulk-len``), which refuses the 512 MB values that filled Redis.
Everything else is denied (``-@all``, no pub/sub channels): no ``KEYS``/``SCAN``/
``FLUSH*``/``CONFIG``/``ACL``/``MONITOR``/``PSUBSCRIBE``, and no other tenant's keys.
Tenant ids are restricted to ``[A-Za-z0-9_-]`` so they cannot smuggle glob characters into
the key patterns, nor ``:`` (tenant ``a:dead`` would own tenant ``a``'s dead letters).
"""

from __future__ import annotations

import re
import secrets
from typing import cast
from urllib.parse import quote

import redis
import structlog

from wire.protocol import events_stream, messages_stream
from wire.redis_bus import load_functions, translate_errors

log = structlog.get_logger(__name__)

TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PASSWORD_BYTES = 32  # secrets.token_urlsafe(32): 256 bits, 43 URL-safe characters


def tenant_username(tenant: str) -> str:
    """Return the Redis ACL user name of ``tenant`` (``hermes-tenant-{tenant}``).

    Raises:
        ValueError: ``tenant`` is not 1-64 characters of ``[A-Za-z0-9_-]``.
    """
    if not TENANT_ID.match(tenant):
        raise ValueError(f"invalid tenant id {tenant!r}: use 1-64 characters of A-Z a-z 0-9 _ -")
    return f"hermes-tenant-{tenant}"


def _append_selectors(stream: str) -> list[str]:
    """Selectors for a stream the tenant appends to (its events, its dead letters).

    ``FCALL`` names the stream and its idempotency keys; the functions (and ``dead_letter``)
    then run stream commands on the stream only and ``GET``/``SET`` on the idempotency keys
    only: a ``SET`` that turned the stream itself into a string would make the control
    plane's ``XREADGROUP`` over many tenants' streams fail with ``WRONGTYPE`` for all of them.
    """
    return [f"(~{stream} ~{stream}:idem:* +fcall)",
            f"(~{stream} +xadd +xlen +xinfo|groups)",
            f"(~{stream}:idem:* +get +set)"]


def tenant_acl_rules(tenant: str, password: str, db: int = 0) -> list[str]:
    """Return the ``ACL SETUSER`` rules for ``tenant`` (see the module docstring).

    ``reset`` first clears any earlier password, keys, channels, commands and selectors, so
    applying these rules to an existing user replaces its password (rotation).
    """
    return _rules(tenant, [f">{password}"], db, writes=True)


def _rules(tenant: str, passwords: list[str], db: int, writes: bool) -> list[str]:
    """The rules of ``tenant_acl_rules`` with ``passwords`` (``>plain`` or ``#sha256`` rules);
    without ``writes`` the append selectors are left out: the user may still consume its
    messages stream but appends nothing anywhere (``set_writes``)."""
    tenant_username(tenant)
    messages, events = messages_stream(tenant), events_stream(tenant)
    rules = ["reset", "on", *passwords, "resetchannels", "-@all",
             "+ping", "+multi", "+exec", "+discard",
             f"~{messages}", "+xreadgroup", "+xack", "+xautoclaim", "+xpending",
             "+xgroup|create", "+xlen"]
    if writes:
        rules += [*_append_selectors(f"{messages}:dead"), *_append_selectors(events)]
    if db:
        rules.append("+select")
    return rules


def _admin_location(admin: redis.Redis) -> tuple[str, str, int, int]:
    pool = admin.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        raise ValueError("the admin connection uses a unix socket; agents need a TCP URL")
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    return scheme, kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)), \
        int(kwargs.get("db", 0))


def _persist(admin: redis.Redis) -> None:
    """Save the ACL users so they survive a Redis restart.

    ``ACL SAVE`` writes the ``aclfile``; without one, ``CONFIG REWRITE`` writes the users
    into redis.conf (https://redis.io/docs/management/security/acl/#use-an-external-acl-file).
    When neither works (no config file either) the users live only in memory: log a warning.
    """
    for command in (("ACL", "SAVE"), ("CONFIG", "REWRITE")):
        try:
            admin.execute_command(*command)
            return
        except redis.ResponseError as exc:
            error = str(exc)
    log.warning("bus_acl.not_persisted", error=error,
                hint="configure `aclfile` in redis.conf so tenant users survive a restart")


def grant(admin: redis.Redis, tenant: str, *, advertised_host: str | None = None) -> str:
    """Create or rotate ``tenant``'s Redis ACL user; return its connection URL.

    Loads the bus functions first (``load_functions``: the user's appends call them).  A new
    random password replaces any earlier one, and connections still authenticated
    with the earlier password are closed (``CLIENT KILL USER``), so a rotation takes effect
    at once.  The URL is the only place the password appears: hand it to that tenant's
    agent only, never log it.

    Args:
        admin: a client with ``ACL`` and ``CLIENT`` permissions (the control plane's).
        tenant: tenant id, 1-64 characters of ``[A-Za-z0-9_-]``.
        advertised_host: host the agent should dial, when it differs from the admin's
            (e.g. the Redis server's private-network address); default: the admin's host.

    Returns:
        ``redis[s]://hermes-tenant-{tenant}:{password}@host:port/db``.

    Raises:
        ValueError: invalid tenant id, or the admin connection is a unix socket.
        BusAuthError: the admin connection may not manage ACL users.
        BusUnavailable: Redis cannot be reached.
    """
    username = tenant_username(tenant)
    scheme, host, port, db = _admin_location(admin)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    load_functions(admin)
    with translate_errors(admin, f"grant bus access to tenant {tenant}"):
        admin.execute_command("ACL", "SETUSER", username, *tenant_acl_rules(tenant, password, db))
        admin.execute_command("CLIENT", "KILL", "USER", username)
        _persist(admin)
    host = advertised_host or host
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    return f"{scheme}://{quote(username)}:{quote(password)}@{host}:{port}/{db}"


def rotate(admin: redis.Redis, tenant: str, *, advertised_host: str | None = None) -> str:
    """Give ``tenant`` a new password (the old one stops working at once); return the URL.

    Same as ``grant``; see it for arguments and errors.
    """
    return grant(admin, tenant, advertised_host=advertised_host)


def revoke(admin: redis.Redis, tenant: str) -> bool:
    """Delete ``tenant``'s ACL user; Redis closes its open connections.

    Idempotent: revoking a user that does not exist does nothing.

    Returns:
        True when a user was deleted, False when there was none.

    Raises:
        ValueError: invalid tenant id.
        BusAuthError, BusUnavailable: as for ``grant``.
    """
    username = tenant_username(tenant)
    with translate_errors(admin, f"revoke bus access of tenant {tenant}"):
        deleted = int(admin.execute_command("ACL", "DELUSER", username))
        if deleted:
            _persist(admin)
    return bool(deleted)



def writes_allowed(admin: redis.Redis, tenant: str) -> bool | None:
    """Whether ``tenant``'s user may append (it has the append selectors; ``set_writes``).

    Returns:
        True or False; None when ``tenant`` has no ACL user.

    Raises:
        ValueError: invalid tenant id.
        BusAuthError, BusUnavailable: as for ``grant``.
    """
    with translate_errors(admin, f"read the bus access of tenant {tenant}"):
        info = admin.acl_getuser(tenant_username(tenant))
    return None if info is None else bool(info["selectors"])


def set_writes(admin: redis.Redis, tenant: str, allowed: bool) -> bool:
    """Give ``tenant``'s user its full rules again (``allowed``) or the same rules without any
    append (its events, its dead letters, their idempotency keys), keeping its password.

    Used by ``control.services.bus_quota`` to stop a tenant over its memory quota from writing
    (issue #19, finding 3).  Open connections keep their login and get ``NOPERM`` on their
    next append (Redis checks the user's current rules on every command).  The password is
    re-applied from the hashes ``ACL GETUSER`` reports (``#sha256`` rules), so the agent's URL
    stays valid.

    Returns:
        True when the user exists (and was changed), False when there is none.

    Raises:
        ValueError: invalid tenant id.
        BusAuthError, BusUnavailable: as for ``grant``.
    """
    username = tenant_username(tenant)
    db = int(admin.connection_pool.connection_kwargs.get("db", 0))
    with translate_errors(admin, f"change the bus writes of tenant {tenant}"):
        info = admin.acl_getuser(username)
        if info is None:
            return False
        passwords = [f"#{digest}" for digest in cast(list[str], info["passwords"])]
        admin.execute_command("ACL", "SETUSER", username, *_rules(tenant, passwords, db, allowed))
        _persist(admin)
    return True
