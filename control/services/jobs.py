"""The Jobs API's rules (issue 23): per-tenant API tokens, jobs with priorities, dependencies
and budgets, run on the tenant's agent, results by poll and by signed callback.

Tokens.  A token is ``hjt_`` + ``secrets.token_urlsafe(32)`` (256 bits) and only its SHA-256
is stored, like the LLM gateway's (``control.services.llm_gateway``); it carries scopes
(``jobs:read``, ``jobs:write``) and a callback signing secret (``whsec_`` + 256 bits) kept
encrypted (``SecretsBox``) because every callback is signed with it.  Both are shown once, at
creation on the dashboard.  A revoked token, or one of a canceled, deleted or paused tenant,
is refused (401); a token without the route's scope is refused (403).

Jobs.  ``POST /api/jobs`` stores a job ``waiting`` for its dependencies (jobs of the same
tenant, ``depends_on``); a job whose dependencies are all ``done`` is dispatched: its ``job``
envelope (``wire.protocol``, chat ``job-<id>`` on the ``api`` channel) is appended to the
tenant's messages stream with its inbound ``Message`` row in the same transaction (so the
agent's answer passes ``event_guard``), and it is ``queued``.  The agent runs jobs in priority
order (higher first) within each job's budget and answers with a ``final`` (``done``) or
``error`` (``failed``) event, which the delivery worker hands to ``take_event``; then the
waiting jobs are released in priority order, and one whose dependency ``failed`` or was
``cancelled`` fails too.  ``DELETE`` cancels a waiting job at once and a queued one by
sending ``/stop`` to its chat (the agent skips it if not started, stops it if running).

Callbacks.  Each job that ends with a ``callback_url`` is POSTed there as JSON (``job_view``),
signed Stripe-style: ``Hermes-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the token's signing secret>`` (the scheme of
https://docs.stripe.com/webhooks#verify-manually), retried by the caller's Huey task.  Outside
local mode (``HERMES_ENV``) a callback goes only to a host whose every address is public
(``public_host``); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from peewee import IntegrityError

from control.db import write_transaction
from control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HermesError,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from control.models import ApiToken, Job, Message, Tenant, TenantStatus, utcnow
from control.services.secrets_box import SecretsBox
from control.services.usage import record_usage
from wire.bus import Bus
from wire.errors import BusUnavailable
from wire.protocol import API_CHANNEL, JOB, Envelope, Event, messages_stream, new_id

log = logging.getLogger(__name__)

SCOPES = ("jobs:read", "jobs:write")
"""Scopes a token may carry: ``jobs:read`` (GET), ``jobs:write`` (POST, DELETE)."""
TOKEN_PREFIX = "hjt_"
SECRET_PREFIX = "whsec_"
MAX_TOKENS = 20
"""Live tokens per tenant; more is a leak waiting to happen, not a use case."""
MAX_PROMPT_CHARS = 20_000
"""Longest prompt (characters): about 5k tokens, a full brief, well inside a model's window."""
MAX_PRIORITY = 100
"""Priorities run 0-100 (higher first); the agent's chat messages rank above all (1000)."""
DEFAULT_BUDGET_CENTS = 50.0
MAX_BUDGET_CENTS = 1000.0
"""A job's budget in US cents: 50 by default, at most $10 (the daily budget still applies)."""
MAX_DEPENDENCIES = 20
MAX_URL_CHARS = 2048
MAX_IDEMPOTENCY_KEY_CHARS = 255
LIST_LIMIT = 100
"""Most jobs ``GET /api/jobs`` returns (newest first)."""
CALLBACK_TIMEOUT = 10.0
"""Seconds a callback receiver has to answer (connect and read each)."""
SIGNATURE_HEADER = "Hermes-Signature"
STATES = ("waiting", "queued", "done", "failed", "cancelled")
END_STATES = ("done", "failed", "cancelled")
CANCELLED_TEXT = "The job was cancelled."


class CallbackFailed(HermesError):
    """A callback could not be delivered this time (unreachable, or not a 2xx); retried."""

    status = 502
    code = "callback_failed"


# -- tokens ---------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(tenant: Tenant, name: str, scopes: list[str], box: SecretsBox
                 ) -> tuple[ApiToken, str, str]:
    """Create an API token for ``tenant``.

    Args:
        tenant: the signed-in user's tenant.
        name: a label (1-80 characters after trimming).
        scopes: a non-empty subset of ``SCOPES``.
        box: encrypts the signing secret.

    Returns:
        ``(row, token, signing secret)``; the token and the secret are shown once, never stored
        in the clear.

    Raises:
        BadRequest: no name, no or unknown scopes, or ``MAX_TOKENS`` live tokens already.
    """
    name = (name or "").strip()
    if not name or len(name) > 80 or "\x00" in name:
        raise BadRequest("Give the token a name of at most 80 characters.", code="bad_token_name")
    if not scopes or any(s not in SCOPES for s in scopes):
        raise BadRequest(f"Choose scopes among {', '.join(SCOPES)}.", code="bad_scopes")
    live = ApiToken.select().where((ApiToken.tenant == tenant) & ApiToken.revoked_at.is_null())
    if live.count() >= MAX_TOKENS:
        raise BadRequest(f"At most {MAX_TOKENS} tokens; revoke one first.", code="too_many_tokens")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(tenant=tenant, name=name, token_hash=_digest(token),
                          scopes=" ".join(s for s in SCOPES if s in scopes),
                          secret_box=box.encrypt(secret))
    return row, token, secret


def revoke_token(tenant: Tenant, token_id: int) -> ApiToken:
    """Revoke ``tenant``'s token ``token_id`` (idempotent); return it.

    Raises:
        NotFound: no such token of this tenant.
    """
    row = ApiToken.get_or_none((ApiToken.id == token_id) & (ApiToken.tenant == tenant))
    if row is None:
        raise NotFound("No such token.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        row.save()
    return row


def tokens_of(tenant: Tenant) -> list[ApiToken]:
    """``tenant``'s tokens, live first, newest first."""
    return list(ApiToken.select().where(ApiToken.tenant == tenant)
                .order_by(ApiToken.revoked_at.is_null(False), ApiToken.id.desc()))


def bearer(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``""``."""
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authenticate(token: str, scope: str) -> ApiToken:
    """Return the live token row ``token`` names, with its tenant loaded.

    Raises:
        Unauthorized: no token, an unknown or revoked one, or its tenant is canceled,
            deleted or paused.
        Forbidden: the token lacks ``scope``.
    """
    row = (ApiToken.select(ApiToken, Tenant).join(Tenant)
           .where(ApiToken.token_hash == _digest(token)).first()) if token else None
    tenant = row.tenant if row is not None else None
    if (row is None or row.revoked_at is not None or tenant is None
            or tenant.status == TenantStatus.CANCELED or tenant.deleted_at is not None
            or tenant.paused_at is not None):
        raise Unauthorized("A valid Jobs API token is required.", code="bad_api_token")
    if scope not in row.scopes.split():
        raise Forbidden(f"This token lacks the {scope} scope.", code="missing_scope")
    ApiToken.update(last_used_at=utcnow()).where(ApiToken.id == row.id).execute()
    return row


# -- jobs -----------------------------------------------------------------------------------


def job_view(job: Job) -> dict[str, Any]:
    """The API's JSON shape of ``job`` (``Job`` in the OpenAPI document)."""
    return {"id": job.public_id, "state": job.state, "prompt": job.prompt,
            "priority": job.priority, "budget_cents": job.budget_cents,
            "depends_on": json.loads(job.depends_on), "callback_url": job.callback_url,
            "callback_state": job.callback_state,
            "result": job.result if job.state in END_STATES else None,
            "cost_cents": round(job.cost_cents, 6), "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at)}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def _number(body: dict, name: str, default: float, low: float, high: float, integer: bool) -> float:
    value = body.get(name, default)
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds)
            or not low <= float(value) <= high):  # type: ignore[arg-type]  # a number: checked
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"'{name}' must be {kind} from {low:g} to {high:g}.", code="bad_job")
    return float(value)  # type: ignore[arg-type]  # a number: checked above


def check_callback_url(url: object) -> str | None:
    """Return the callback URL of a request body (None when absent).

    Raises:
        BadRequest: not an ``http(s)`` URL with a host, or longer than ``MAX_URL_CHARS``.
    """
    if url is None:
        return None
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or "\x00" in url:
        raise BadRequest("'callback_url' must be a URL.", code="bad_callback_url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadRequest("'callback_url' must be a URL.", code="bad_callback_url") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        raise BadRequest("'callback_url' must be an http(s) URL with a host and no credentials.",
                         code="bad_callback_url")
    return url


def parse_request(body: object) -> dict[str, Any]:
    """Validate a ``POST /api/jobs`` body.

    Returns:
        ``{"prompt", "priority", "budget_cents", "depends_on", "callback_url"}``.

    Raises:
        BadRequest: not an object, an unknown field, an empty or too long prompt, a prompt
            that is a slash command, a field out of range (see the constants), or NUL in a
            string (PostgreSQL cannot store it).
    """
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="bad_job")
    unknown = set(body) - {"prompt", "priority", "budget_cents", "depends_on", "callback_url"}
    if unknown:
        raise BadRequest(f"Unknown field {sorted(unknown)[0]!r:.60}.", code="bad_job")
    prompt = body.get("prompt")
    if (not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS
            or "\x00" in prompt):  # PostgreSQL text cannot hold NUL
        raise BadRequest(f"'prompt' must be a text of 1 to {MAX_PROMPT_CHARS} characters "
                         "without NUL.", code="bad_job")
    if prompt.lstrip().startswith("/"):
        raise BadRequest("A job's prompt cannot be a slash command.", code="bad_job")
    depends = body.get("depends_on", [])
    if (not isinstance(depends, list) or len(depends) > MAX_DEPENDENCIES
            or not all(isinstance(d, str) and 0 < len(d) <= 64 and "\x00" not in d
                       for d in depends)):
        raise BadRequest(f"'depends_on' must be a list of at most {MAX_DEPENDENCIES} job ids.",
                         code="bad_job")
    budget = float(_number(body, "budget_cents", DEFAULT_BUDGET_CENTS, 0.01, MAX_BUDGET_CENTS, False))
    return {"prompt": prompt.strip(),
            "priority": int(_number(body, "priority", 0, 0, MAX_PRIORITY, True)),
            "budget_cents": budget, "depends_on": list(dict.fromkeys(depends)),
            "callback_url": check_callback_url(body.get("callback_url"))}


def create_job(token: ApiToken, body: object, idempotency_key: str | None, bus: Bus
               ) -> tuple[Job, bool, list[Job]]:
    """Create (and, when it depends on nothing unfinished, dispatch) a job for the token's tenant.

    Args:
        token: from ``authenticate`` (scope ``jobs:write``).
        body: the parsed request body (``parse_request``).
        idempotency_key: the ``Idempotency-Key`` header, if any: a second request with the same
            token and key returns the first job, unchanged.
        bus: where the job envelope is appended.

    Returns:
        ``(job, created, ended)``: ``created`` False for an idempotent repeat; ``ended`` the
        jobs that ended meanwhile (the new one, when a dependency had failed), for callbacks.

    Raises:
        BadRequest: a bad body, a bad key, or a dependency that is not a job of this tenant.
        ServiceUnavailable: the bus is unreachable (nothing stored).
    """
    if idempotency_key is not None and (not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
                                        or "\x00" in idempotency_key):
        raise BadRequest("'Idempotency-Key' must be 1 to 255 characters.", code="bad_idempotency_key")
    fields = parse_request(body)
    try:
        return _create(token, fields, idempotency_key, bus)
    except IntegrityError:
        # A concurrent request with the same key committed first (PostgreSQL raises at our
        # INSERT, before anything was appended to the bus): answer its job.
        earlier = Job.get_or_none((Job.token == token) & (Job.idempotency_key == idempotency_key))
        if earlier is None:
            raise
        return earlier, False, []


def _create(token: ApiToken, fields: dict[str, Any], idempotency_key: str | None, bus: Bus
            ) -> tuple[Job, bool, list[Job]]:
    tenant = token.tenant
    with write_transaction():
        if idempotency_key is not None:
            earlier = Job.get_or_none((Job.token == token) & (Job.idempotency_key == idempotency_key))
            if earlier is not None:
                return earlier, False, []
        found = {j.public_id: j for j in Job.select().where(
            (Job.tenant == tenant) & Job.public_id.in_(fields["depends_on"] or [""]))}
        missing = [d for d in fields["depends_on"] if d not in found]
        if missing:
            raise BadRequest(f"No job {missing[0]!r:.70} to depend on.", code="unknown_dependency")
        envelope_id = new_id()
        job = Job.create(tenant=tenant, token=token, public_id=f"job_{envelope_id[:24]}",
                         envelope_id=envelope_id, prompt=fields["prompt"],
                         priority=fields["priority"], budget_cents=fields["budget_cents"],
                         depends_on=json.dumps(fields["depends_on"]),
                         callback_url=fields["callback_url"], idempotency_key=idempotency_key,
                         callback_state="pending" if fields["callback_url"] else "none",
                         state="waiting")
        ended = _release(tenant.id, bus)
    return Job.get_by_id(job.id), True, ended


def get_job(tenant_id: int, public_id: str) -> Job:
    """Return tenant ``tenant_id``'s job ``public_id``.

    Raises:
        NotFound: no such job of this tenant (another tenant's job is not found either).
    """
    job = None if "\x00" in public_id else Job.get_or_none(
        (Job.public_id == public_id) & (Job.tenant == tenant_id))
    if job is None:
        raise NotFound("No such job.")
    return job


def list_jobs(tenant_id: int, state: str | None = None, limit: int = LIST_LIMIT) -> list[Job]:
    """Tenant ``tenant_id``'s newest ``limit`` jobs, optionally in one ``state``.

    Raises:
        BadRequest: ``state`` is not one of ``STATES``.
    """
    query = Job.select().where(Job.tenant == tenant_id)
    if state is not None:
        if state not in STATES:
            raise BadRequest(f"'state' must be one of {', '.join(STATES)}.", code="bad_state")
        query = query.where(Job.state == state)
    return list(query.order_by(Job.id.desc()).limit(limit))


def cancel_job(tenant_id: int, public_id: str, bus: Bus) -> list[Job]:
    """Cancel tenant ``tenant_id``'s job ``public_id``; return the jobs that ended (it, and the
    waiting jobs that depended on it, now failed).

    A waiting job never runs; a queued one is sent ``/stop`` on its chat (the agent skips it
    if it has not started, stops it if it runs; what it spent is still counted).

    Raises:
        NotFound: no such job of this tenant.
        Conflict: the job has ended already.
        ServiceUnavailable: the bus is unreachable (nothing changed).
    """
    with write_transaction():
        job = get_job(tenant_id, public_id)
        if job.state in END_STATES:
            raise Conflict(f"The job is {job.state} already.", code="job_ended")
        if job.state == "queued":
            stop = Envelope(id=new_id(), tenant=str(tenant_id), channel=API_CHANNEL,
                            chat_id=_chat(job), sender_id="api", text="/stop")
            Message.insert(envelope_id=stop.id, direction="in", tenant=tenant_id,
                           channel=API_CHANNEL, chat_id=stop.chat_id, text=stop.text).execute()
            _append(bus, stop)
        _end(job, "cancelled", CANCELLED_TEXT)
        return [job, *_release(tenant_id, bus)]


def _chat(job: Job) -> str:
    return f"job-{job.public_id}"


def _append(bus: Bus, envelope: Envelope) -> None:
    try:
        bus.append(messages_stream(envelope.tenant), envelope.to_json(), idempotency_key=envelope.id)
    except BusUnavailable as exc:
        raise ServiceUnavailable("The job could not be handed to your agent just now; "
                                 "please try again.") from exc


def _end(job: Job, state: str, result: str, cost_cents: float | None = None) -> None:
    job.state, job.result, job.finished_at = state, result, utcnow()
    if cost_cents is not None:
        job.cost_cents = cost_cents
    job.save()


def _dispatch(job: Job, bus: Bus) -> None:
    """Send ``job`` to its tenant's agent: its ``Message`` row and envelope, now ``queued``."""
    envelope = Envelope(id=job.envelope_id, tenant=str(job.tenant_id), channel=API_CHANNEL,
                        chat_id=_chat(job), sender_id="api", text=job.prompt, kind=JOB,
                        job={"id": job.public_id, "priority": job.priority,
                             "budget_cents": job.budget_cents})
    Message.insert(envelope_id=envelope.id, direction="in", tenant=job.tenant_id,
                   channel=API_CHANNEL, chat_id=envelope.chat_id,
                   text=job.prompt).on_conflict_ignore().execute()
    _append(bus, envelope)
    job.state, job.started_at = "queued", utcnow()
    job.save()


def _release(tenant_id: int, bus: Bus) -> list[Job]:
    """Dispatch every waiting job of the tenant whose dependencies are done (priority order)
    and fail those with a failed or cancelled dependency, until nothing changes; return the
    jobs that failed.  Runs inside the caller's transaction."""
    failed: list[Job] = []
    changed = True
    while changed:
        changed = False
        waiting = list(Job.select().where((Job.tenant == tenant_id) & (Job.state == "waiting"))
                       .order_by(Job.priority.desc(), Job.id))
        for job in waiting:
            needs = json.loads(job.depends_on)
            states: dict[str, str] = {
                row.public_id: row.state for row in Job.select(Job.public_id, Job.state)
                .where((Job.tenant == tenant_id) & Job.public_id.in_(needs or [""]))}
            broken = [d for d in needs if states.get(d) in ("failed", "cancelled")]
            if broken:
                _end(job, "failed", f"Dependency {broken[0]} {states[broken[0]]}; this job did not run.")
                failed.append(job)
                changed = True
            elif all(states.get(d) == "done" for d in needs):
                _dispatch(job, bus)
                changed = True
    return failed


def take_event(tenant_id: int, event: Event, bus: Bus) -> list[Job]:
    """Record an ``api``-channel event of tenant ``tenant_id`` (``event_guard`` passed it);
    return the jobs that ended with it (for their callbacks).

    A ``final`` ends the job ``done`` with the reply as its result, an ``error`` ends it
    ``failed``; the cost is the event's ``usage.cost_cents`` (its calls also go to ``Usage``);
    then waiting jobs are released.  Deltas, typing, answers to ``/stop`` and repeats of an
    event already taken change nothing (idempotent); a cancelled job keeps its state but gets
    its cost.
    """
    if event.kind not in ("final", "error"):
        return []
    with write_transaction():
        job = Job.get_or_none((Job.envelope_id == event.message_id) & (Job.tenant == tenant_id))
        if job is None or (job.finished_at is not None and job.state != "cancelled"):
            return []
        tenant = Tenant.get_or_none(Tenant.id == tenant_id)
        if tenant is not None:
            record_usage(tenant, event)
        cost = float((event.usage or {}).get("cost_cents") or 0.0)
        if job.state == "cancelled":
            job.cost_cents = cost
            job.save()
            return []
        _end(job, "done" if event.kind == "final" else "failed", event.text, cost)
        log.info("job %s %s, %.4f cents", job.public_id, job.state, cost)
        return [job, *_release(tenant_id, bus)]


# -- callbacks ------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Hermes-Signature`` header value of ``body`` sent at ``timestamp`` (Unix seconds):
    ``t=<timestamp>,v1=<hex HMAC-SHA256 of b"<timestamp>." + body under secret>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def public_host(host: str, resolve: Callable[..., list] = socket.getaddrinfo) -> bool:
    """True when every address ``host`` resolves to is globally routable (``is_global``: no
    loopback, private RFC 1918 / RFC 4193, link-local, CGNAT RFC 6598, multicast or reserved;
    the rule of the agent's ``fetch_url``).  A name that does not resolve is not public."""
    try:
        infos = resolve(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0].split("%", 1)[0] for info in infos}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a).is_global
                                       and not ipaddress.ip_address(a).is_multicast
                                       for a in addresses)
    except ValueError:
        return False


def deliver_callback(job_id: int, box: SecretsBox, *, env: str, final_attempt: bool,
                     client: httpx.Client | None = None) -> str:
    """POST job ``job_id``'s ``job_view`` to its callback URL, signed; return the callback state.

    Args:
        job_id: the ``Job`` row id.
        box: decrypts the token's signing secret.
        env: ``HERMES_ENV``; outside ``local`` the URL's host must be public (``public_host``).
        final_attempt: a failure now marks the callback ``failed`` instead of raising.
        client: the HTTP client (default: a new one with ``CALLBACK_TIMEOUT``).

    Returns:
        ``delivered``, ``failed`` (refused host, a failed last attempt, or a revoked token:
        nothing to sign with that the receiver still trusts), or the current state when there
        is nothing to send.

    Raises:
        CallbackFailed: unreachable or not a 2xx answer, while attempts remain (Huey retries).
    """
    job = Job.get_or_none(Job.id == job_id)
    if job is None or not job.callback_url or job.callback_state != "pending":
        return job.callback_state if job is not None else "none"
    token = ApiToken.get_or_none(ApiToken.id == job.token_id)
    host = urlsplit(job.callback_url).hostname or ""
    if token is None or token.revoked_at is not None:
        return _callback_state(job, "failed", "its token was revoked")
    if env != "local" and not public_host(host):
        return _callback_state(job, "failed", f"{host!r} is not a public host")
    body = json.dumps(job_view(job), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(
        box.decrypt(token.secret_box), body, int(time.time())), "User-Agent": "HermesMax-Jobs/1"}
    own = client is None
    client = client or httpx.Client(timeout=CALLBACK_TIMEOUT, follow_redirects=False)
    try:
        answer = client.post(job.callback_url, content=body, headers=headers)
        problem = None if 200 <= answer.status_code < 300 else f"answered {answer.status_code}"
    except httpx.HTTPError as exc:
        problem = f"unreachable ({type(exc).__name__})"
    finally:
        if own:
            client.close()
    if problem is None:
        return _callback_state(job, "delivered", "")
    if final_attempt:
        return _callback_state(job, "failed", problem)
    log.info("callback of job %s %s; will retry", job.public_id, problem)
    raise CallbackFailed(f"the callback of {job.public_id} {problem}")


def _callback_state(job: Job, state: str, why: str) -> str:
    if state == "failed":
        log.warning("callback of job %s failed: %s", job.public_id, why)
    Job.update(callback_state=state).where(Job.id == job.id).execute()
    return state
