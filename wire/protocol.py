"""Envelope (inbound) and Event (outbound) records and their versioned JSON encoding.

Shapes follow the contracts in DESIGN.md: an Envelope carries one user message to a tenant's
agent; an Event carries one piece of the agent's answer back (``delta``, ``final``, ``error``
or ``status``) or, with kind ``lifecycle``, the agent's own state (``ready``, ``heartbeat``,
``failed``; DESIGN.md "Agent lifecycle"). Both travel as JSON objects with a ``v`` field so the
format can evolve.

Compatibility: within version 1 changes are additive only.  New fields have defaults, so an
event written before they existed still parses; ``lifecycle`` events are new in version 1 and a
control plane older than them dead-letters them (deploy the control plane before the agents).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from wire.errors import MalformedMessage

WIRE_VERSION = 1

CHANNELS = frozenset({"telegram", "discord", "slack", "whatsapp", "web", "cron", "api"})
# The Jobs API's channel (issue 23): a job's envelope and its events name chat ``job-<job id>``.
API_CHANNEL = "api"
EVENT_KINDS = frozenset({"delta", "final", "error", "status", "lifecycle"})
LIFECYCLE = "lifecycle"
# ``ready``: LLM backend, bus and stores are up; ``heartbeat``: still alive (every
# HERMES_HEARTBEAT_INTERVAL seconds); ``failed``: could not start, ``text`` says why.
LIFECYCLE_STATES = frozenset({"ready", "heartbeat", "failed"})

# Keys of ``Envelope.preferences`` (issue #10): ``timezone`` (IANA name), ``language`` (BCP 47
# tag of the reply language), ``model`` (a ``/model`` choice) and ``about`` (free text about the
# user and how to answer).  An agent ignores keys it does not know.
PREFERENCE_KEYS = ("timezone", "language", "model", "about")

# Kinds of ``Envelope`` (issue #13): ``message`` (a user message, the default),
# ``mcp_config`` (the tenant's MCP servers) and ``job`` (a Jobs API job, issue 23); see the
# Envelope docstring for the contracts.
MESSAGE = "message"
MCP_CONFIG = "mcp_config"
JOB = "job"
ENVELOPE_KINDS = frozenset({MESSAGE, MCP_CONFIG, JOB})
# Attachment kinds and the errors a file that was not kept carries (Envelope docstring).
ATTACHMENT_KINDS = frozenset({"image", "voice", "audio", "document", "video", "sticker", "file"})
ATTACHMENT_ERRORS = frozenset({"too_large", "unsupported", "unavailable"})
# Seconds a signed media URL stays valid: long enough for an agent that was down for days to
# catch up on its stream (the grace period is 7 days, HERMES_GRACE_DAYS).
MEDIA_URL_TTL = 7 * 24 * 3600

# Consumer groups: agents read their inbox as AGENT_GROUP, the control plane reads every
# events stream as DELIVERY_GROUP.
AGENT_GROUP = "agent"
DELIVERY_GROUP = "delivery"


def messages_stream(tenant: str) -> str:
    """Return the inbound stream name for ``tenant`` (``hermes:messages:{tenant}``, DESIGN.md)."""
    return f"hermes:messages:{tenant}"


def events_stream(tenant: str) -> str:
    """Return the outbound stream name for ``tenant`` (``hermes:events:{tenant}``, DESIGN.md)."""
    return f"hermes:events:{tenant}"


def new_id() -> str:
    """Return a fresh globally unique id (UUID4 hex, 32 characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Envelope:
    """One inbound user message addressed to a tenant's agent.

    Attributes:
        id: globally unique idempotency key; consumers must process each id once.
        tenant: tenant id (the control plane's tenant primary key, as a string).
        channel: one of ``CHANNELS``.
        chat_id: the platform's chat/conversation id, as a string.
        sender_id: the platform's user id of the sender, as a string.
        text: message text (or media caption); may be empty when only attachments arrived.
        attachments: list of dicts, one per file the user sent (the attachment contract below).
        received_at: Unix time in seconds (float) when the control plane accepted the message.
        platform_message_id: the platform's id of the inbound message, as a string, if any.
        request_id: the id of the control plane's HTTP request (the webhook) that accepted the
            message, if any; the agent logs it with its turn (``wire.logs``), so one id
            follows the message across the bus.  ``None`` for cron runs and older senders.
        preferences: the tenant's dashboard settings at the time the control plane published
            the message (``PREFERENCE_KEYS``; each value a string, a key absent when unset);
            ``None`` for cron runs and older senders (the agent keeps the last it received;
            an empty dict means every setting is unset).
        kind: ``"message"`` (default; absent in older envelopes) or ``"mcp_config"``.
        mcp_servers: for kind ``mcp_config`` only: the tenant's MCP servers, else ``None``.
        job: for kind ``job`` only: ``{"id": <job id>, "priority": <int, higher first>,
            "budget_cents": <float, US cents>}``, else ``None``.

    The attachment contract (control plane → agent, issue #12).  Each item has ``kind``
    (``image``, ``voice``, ``audio``, ``document``, ``video``, ``sticker`` or ``file``) and the
    platform's ``file_id``.  The control plane downloads every file before it publishes the
    envelope (never inside the webhook request), keeps it per tenant in object storage and adds
    ``mime_type``, ``size`` (bytes), ``name`` (the sender's file name or ``""``), ``sha256``
    (hex) and ``url``: an HTTPS (local: HTTP) address on the control plane that answers the
    bytes to a plain GET, signed for this tenant and valid for ``MEDIA_URL_TTL`` seconds (seven
    days).  A file that was not kept carries ``error`` instead of ``url``: ``too_large`` (with
    ``size`` and ``limit`` in bytes), ``unsupported`` (its ``mime_type`` is not accepted) or
    ``unavailable`` (the platform would not give it); the agent tells the user so in its reply
    and answers the rest of the message.  Envelopes without ``url`` or ``error`` items (older
    senders) carry only ``kind`` and ``file_id``, which the agent ignores.

    The ``mcp_config`` contract (control plane → agent, issue #13).  The control plane appends
    to ``hermes:messages:{tenant}`` an envelope with ``kind="mcp_config"``, a fresh ``id``,
    ``tenant``, ``channel="web"``, ``chat_id=""``, ``sender_id="control"``, ``text=""`` and
    ``mcp_servers`` = the COMPLETE ``mcpServers`` mapping the control plane manages for the
    tenant (name → entry), in the Claude Desktop / Cursor shape the agent reads
    (``agent.mcp_client.config``): ``{"composio": {"url": "https://…/mcp", "headers":
    {"x-api-key": "…"}}}`` for streamable HTTP, or ``{"command", "args", "env"}`` for stdio;
    optional keys ``includeTools``, ``excludeTools``, ``writes`` (tool names that must ask the
    user first), ``timeout`` (seconds), ``disabled``.  Every push replaces the previous one:
    a server left out is removed (send ``{}`` when the last service is disconnected).  The
    agent writes ``<data_dir>/mcp_servers.json`` (mode 0600) = its ``HERMES_MCP_SERVERS``
    servers + these under their names, reloads its MCP servers without a restart (closing
    removed ones), makes no model call, publishes no event and acks the envelope.  Publish
    after every connection change and once when an agent becomes ready (its file survives
    restarts, but a push while it was down is only in the stream until consumed).  The
    mapping carries credentials: the per-tenant stream ACL keeps it from other tenants; never
    log it.  Agents older than this field would treat it as an empty user message: deploy
    agents first.

    The ``job`` contract (control plane → agent, issue 23).  A Jobs API job whose dependencies
    are done is appended to ``hermes:messages:{tenant}`` as ``kind="job"``, ``channel="api"``,
    ``chat_id="job-<job id>"`` (one chat per job, so jobs never share history),
    ``sender_id="api"``, ``text`` = the prompt and ``job`` as above.  The agent runs it as one
    turn in priority order (Huey task priority), its model calls capped at ``budget_cents``
    and attributed to the job id in its usage ledger, and answers with the usual ``final``
    (or ``error``) event carrying ``usage``.  A ``/stop`` envelope on the job's chat cancels
    it: a job not started yet is then skipped with an ``error`` event, a running one stops.
    """

    id: str
    tenant: str
    channel: str
    chat_id: str
    sender_id: str
    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    received_at: float = field(default_factory=time.time)
    platform_message_id: str | None = None
    request_id: str | None = None
    preferences: dict[str, str] | None = None
    kind: str = MESSAGE
    mcp_servers: dict[str, dict[str, Any]] | None = None
    job: dict[str, Any] | None = None

    def to_json(self) -> str:
        """Return the versioned JSON text of this envelope."""
        return json.dumps({"v": WIRE_VERSION, "type": "envelope", **asdict(self)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        """Parse versioned JSON text into an Envelope.

        Raises:
            MalformedMessage: the text is not JSON, not an envelope, has an unknown version,
                channel or kind, lacks a required field, or is an ``mcp_config`` without an
                ``mcp_servers`` object.
        """
        data = _decode(raw, "envelope")
        if data.get("channel") not in CHANNELS:
            raise MalformedMessage(f"unknown channel {data.get('channel')!r}")
        kind = data.get("kind", MESSAGE)
        if kind not in ENVELOPE_KINDS:
            raise MalformedMessage(f"unknown envelope kind {kind!r}")
        if kind == MCP_CONFIG and not isinstance(data.get("mcp_servers"), dict):
            raise MalformedMessage("an mcp_config envelope needs an mcp_servers object")
        if kind == JOB:
            _check_job(data.get("job"))
        return _build(cls, data)

    def job_priority(self) -> int:
        """The priority of a ``job`` envelope (higher runs first); 0 for any other envelope."""
        return int(self.job["priority"]) if self.kind == JOB and self.job else 0

    def job_budget_cents(self) -> float | None:
        """The spend cap of a ``job`` envelope in US cents; None for any other envelope."""
        return float(self.job["budget_cents"]) if self.kind == JOB and self.job else None


@dataclass(frozen=True)
class Event:
    """One outbound piece of an agent's answer to the envelope ``message_id``, or a lifecycle report.

    Attributes:
        message_id: the id of the Envelope being answered (a fresh id for lifecycle events).
        seq: position of this event within the answer, starting at 0.
        kind: ``delta`` (the reply text so far, cumulative), ``final`` (the whole reply),
            ``error`` (a user-facing error text) or ``status`` (e.g. ``typing``).
        text: the text for this event (cumulative for deltas, so any one edit is complete).
        tenant, channel, chat_id: where the reply goes.
        usage: for ``final``/``error``: ``{"model", "input_tokens", "output_tokens",
            "cost_cents", "latency_ms"}`` of the LLM call, else ``None``.
        lifecycle: for kind ``lifecycle``: one of ``LIFECYCLE_STATES``, else ``None``.
        at: Unix time in seconds (float) when the agent wrote a lifecycle event, else ``None``.
    """

    message_id: str
    seq: int
    kind: str
    text: str
    tenant: str
    channel: str
    chat_id: str
    usage: dict[str, Any] | None = None
    lifecycle: str | None = None
    at: float | None = None

    def to_json(self) -> str:
        """Return the versioned JSON text of this event."""
        return json.dumps({"v": WIRE_VERSION, "type": "event", **asdict(self)})

    @classmethod
    def lifecycle_event(cls, tenant: str, state: str, text: str = "",
                        at: float | None = None) -> Event:
        """Return a lifecycle event of ``tenant``'s agent (no chat: ``channel``/``chat_id`` empty).

        Args:
            tenant: the tenant id.
            state: one of ``LIFECYCLE_STATES``.
            text: a human-readable detail (the reason, for ``failed``).
            at: Unix seconds; default now.

        Raises:
            MalformedMessage: ``state`` is not a lifecycle state.
        """
        if state not in LIFECYCLE_STATES:
            raise MalformedMessage(f"unknown lifecycle state {state!r}")
        return cls(message_id=new_id(), seq=0, kind=LIFECYCLE, text=text, tenant=tenant,
                   channel="", chat_id="", lifecycle=state, at=time.time() if at is None else at)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """Parse versioned JSON text into an Event.

        Raises:
            MalformedMessage: not JSON, not an event, unknown version or kind, missing field,
                or a field of the wrong JSON type (``_check_event_types``: e.g. ``"text": 1``).
        """
        data = _decode(raw, "event")
        if data.get("kind") not in EVENT_KINDS:
            raise MalformedMessage(f"unknown event kind {data.get('kind')!r}")
        if data["kind"] == LIFECYCLE and data.get("lifecycle") not in LIFECYCLE_STATES:
            raise MalformedMessage(f"unknown lifecycle state {data.get('lifecycle')!r}")
        _check_event_types(data)
        return _build(cls, data)


# The JSON type each Event field must have: an event is written by an untrusted tenant VM
# (DESIGN.md "Trust boundaries"), so a wrong type is refused here, before any consumer uses it.
_EVENT_TYPES: dict[str, tuple[type, ...]] = {
    "message_id": (str,), "seq": (int,), "kind": (str,), "text": (str,), "tenant": (str,),
    "channel": (str,), "chat_id": (str,), "usage": (dict, type(None)),
    "lifecycle": (str, type(None)), "at": (int, float, type(None)),
}
_USAGE_NUMBERS = ("input_tokens", "output_tokens", "cost_cents", "latency_ms")


def _check_event_types(data: dict[str, Any]) -> None:
    """Raise ``MalformedMessage`` naming the first Event field whose JSON type is wrong.

    Checks every field of ``_EVENT_TYPES`` (``bool`` is not a number here), a reply's
    ``channel`` against ``CHANNELS``, ``seq`` >= 0, and the ``usage`` shape: ``model`` a
    string, each of ``_USAGE_NUMBERS`` a non-negative number, ``calls`` a list of such objects.
    """
    for name, types in _EVENT_TYPES.items():
        if name not in data:
            continue  # a missing required field is reported by ``_build``
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise MalformedMessage(f"event field {name!r} must be {expected}, not "
                                   f"{type(value).__name__} {value!r:.40}")
    if data.get("seq", 0) < 0:
        raise MalformedMessage(f"event field 'seq' must be >= 0, not {data['seq']}")
    if data["kind"] != LIFECYCLE and data.get("channel") not in CHANNELS:
        raise MalformedMessage(f"unknown channel {data.get('channel')!r}")
    usage = data.get("usage")
    if usage is not None:
        calls = usage.get("calls")
        if calls is not None and not isinstance(calls, list):
            raise MalformedMessage("event usage 'calls' must be a list")
        for call in [usage, *(calls or [])]:
            _check_usage(call)


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object"}


def _check_usage(call: Any) -> None:
    if not isinstance(call, dict):
        raise MalformedMessage("event usage calls must be objects")
    if not isinstance(call.get("model", ""), str):
        raise MalformedMessage("event usage 'model' must be a string")
    for name in _USAGE_NUMBERS:
        value = call.get(name, 0)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise MalformedMessage(f"event usage {name!r} must be a non-negative number, "
                                   f"not {value!r:.40}")


def _check_job(job: Any) -> None:
    """Raise ``MalformedMessage`` unless ``job`` is ``{"id": str, "priority": int,
    "budget_cents": non-negative number}`` (the ``job`` contract, Envelope docstring)."""
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise MalformedMessage("a job envelope needs a job object with a string id")
    priority, budget = job.get("priority"), job.get("budget_cents")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise MalformedMessage("job 'priority' must be an integer")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
        raise MalformedMessage("job 'budget_cents' must be a non-negative number")


def _decode(raw: str | bytes, expected_type: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != expected_type:
        raise MalformedMessage(f"not an {expected_type}")
    if data.get("v") != WIRE_VERSION:
        raise MalformedMessage(f"unsupported wire version {data.get('v')!r}")
    return data


def _build(cls, data: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise MalformedMessage(f"bad {cls.__name__.lower()}: {exc}") from exc
