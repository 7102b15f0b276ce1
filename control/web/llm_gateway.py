"""``/llm/…``: the LLM gateway agents call instead of the providers (issue #19).

Thin pass-through over the providers' own wire formats, so the agents' official SDKs work
unchanged with ``base_url`` = the gateway and ``api_key`` = their tenant's gateway token:

* ``POST /llm/anthropic/v1/messages``: Anthropic Messages (https://docs.anthropic.com/en/api/
  messages), JSON or ``stream: true`` server-sent events;
* ``POST /llm/openai/v1/chat/completions``: OpenAI chat completions, JSON or ``stream: true``
  (``stream_options.include_usage`` is switched on so the last chunk carries the usage);
* ``POST /llm/openai/v1/audio/transcriptions``: the Whisper API (multipart form).

Each call: the token (``x-api-key`` or ``Authorization: Bearer``) names the tenant
(``control.services.llm_gateway.authenticate``), the plan's model list and daily budget are
checked (``admit``), the operator's key is added, the answer is passed back unbuffered (a
stream byte for byte, as it arrives) and one ``LlmCall`` row records the provider's usage and
the agent's reason for choosing this backend (``X-Hermes-Route-Reason``, ``wire.route_reasons``:
absent is recorded as ``""``, any other value is refused with 400);
a paid call that takes today's spend past 80 % of the budget warns the user's chats once a
day (``control.services.budget_warning``).
Refusals are in the route's provider error format (``{"type": "error", "error": {…}}`` for
Anthropic, ``{"error": {…}}`` for OpenAI), so the SDKs raise their usual errors: 401 bad token,
403 model not in the plan, 429 budget spent (no upstream call), 400 bad body, 502 provider
unreachable (the agent's router fails over to its next backend).  Neither bodies, headers nor
tokens are logged.  CSRF-exempt: the caller is an agent with a bearer token.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
from flask import Blueprint, Response, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from control.errors import BadRequest, HermesError
from control.models import Tenant
from control.services import budget_warning, llm_gateway
from control.services.llm_gateway import Metered, NotConfigured, StreamMeter, UpstreamUnreachable
from control.web import runtime
from control.web.auth import csrf

log = logging.getLogger(__name__)

bp = Blueprint("llm_gateway", __name__)
csrf.exempt(bp)  # tenant agents authenticate with their bearer token

# Bytes: Anthropic's Messages request limit is 32 MB (docs: api/overview, "Request size
# limits"); OpenAI's transcription upload limit is 25 MB.
MAX_BYTES = 32 * 1024 * 1024
# Seconds: connecting to the provider; between two bytes of an answer (a long reply streams
# for minutes but never idles that long); sending a large upload.
TIMEOUT = httpx.Timeout(connect=10.0, read=180.0, write=60.0, pool=10.0)
# Answer headers passed back to the agent (the SDKs read the request id and Retry-After).
PASS_BACK = ("content-type", "request-id", "x-request-id", "retry-after")
# Sent when the agent's SDK names none (the current stable version, Anthropic's versioning docs).
ANTHROPIC_VERSION = "2023-06-01"

_client = httpx.Client(timeout=TIMEOUT, follow_redirects=False,
                       limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))

# Error kinds per provider format: HTTP status -> Anthropic ``error.type``
# (https://docs.anthropic.com/en/api/errors) and OpenAI ``(error.type, error.code)``
# (https://platform.openai.com/docs/guides/error-codes).
_ANTHROPIC_KINDS = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                    413: "request_too_large", 429: "rate_limit_error", 502: "api_error",
                    503: "api_error"}
_OPENAI_KINDS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
                 403: ("invalid_request_error", "model_not_allowed"),
                 413: ("invalid_request_error", "request_too_large"),
                 429: ("insufficient_quota", "insufficient_quota"), 502: ("server_error", None),
                 503: ("server_error", None)}


@bp.before_request
def _limit_size():
    request.max_content_length = MAX_BYTES


def _refusal(status: int, message: str):
    if request.path.startswith(llm_gateway.ANTHROPIC_PATH):
        body: dict = {"type": "error",
                      "error": {"type": _ANTHROPIC_KINDS.get(status, "api_error"), "message": message}}
    else:
        kind, code = _OPENAI_KINDS.get(status, ("invalid_request_error", None))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return jsonify(body), status


@bp.errorhandler(HermesError)
def _hermes_error(exc: HermesError):
    return _refusal(exc.status, str(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _refusal(exc.code or 400, exc.description or exc.name)


def _tenant(configured: bool):
    tenant = llm_gateway.authenticate(llm_gateway.bearer(request.headers))
    if not configured:
        raise NotConfigured("The operator has set up no provider for this API.")
    return tenant


def _admit_json(configured: bool) -> tuple[Tenant, dict, str]:
    """The calling tenant, the JSON body and its admitted model, for a route with a JSON body.

    Args:
        configured: whether the operator has set up the route's provider.

    Raises:
        Unauthorized, NotConfigured, BadRequest (not a JSON object), ModelNotAllowed,
        BudgetSpent: see the module docstring (answered in the route's error format).
    """
    tenant = _tenant(configured)
    try:
        body = json.loads(request.get_data())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_request")
    return tenant, body, llm_gateway.admit(runtime().settings, tenant, body.get("model"))


@bp.route(llm_gateway.ANTHROPIC_PATH + "/v1/messages", methods=["POST"])
def anthropic_messages():
    """Forward one Anthropic Messages call (JSON or SSE) with the operator's key; refused as
    ``_admit_json`` says or with UpstreamUnreachable (502), in Anthropic's error format."""
    settings = runtime().settings
    tenant, _body, model = _admit_json(bool(settings.llm_anthropic_api_key))
    headers = {"content-type": "application/json", "x-api-key": settings.llm_anthropic_api_key,
               "anthropic-version": request.headers.get("anthropic-version", ANTHROPIC_VERSION)}
    if "anthropic-beta" in request.headers:
        headers["anthropic-beta"] = request.headers["anthropic-beta"]
    return _forward("anthropic", tenant, model, f"{settings.llm_anthropic_url}/v1/messages",
                    headers, content=request.get_data())


@bp.route(llm_gateway.OPENAI_PATH + "/chat/completions", methods=["POST"])
def openai_chat_completions():
    """Forward one OpenAI chat completion (JSON or SSE) with the operator's key; refused as
    ``_admit_json`` says or with UpstreamUnreachable (502), in OpenAI's error format."""
    settings = runtime().settings
    tenant, body, model = _admit_json(bool(settings.llm_openai_url))
    content = request.get_data()
    options = body.get("stream_options")
    if body.get("stream") is True and not (isinstance(options, dict) and options.get("include_usage")):
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        content = json.dumps(body).encode()
    return _forward("openai", tenant, model, f"{settings.llm_openai_url}/chat/completions",
                    _openai_headers(settings.llm_openai_api_key, "application/json"), content=content)


@bp.route(llm_gateway.OPENAI_PATH + "/audio/transcriptions", methods=["POST"])
def openai_transcriptions():
    """Forward one transcription (multipart: ``file``, ``model``, options) with the operator's key.

    Raises:
        Unauthorized, ModelNotAllowed, BudgetSpent, BadRequest, NotConfigured,
        UpstreamUnreachable: see the module docstring (answered in OpenAI's error format).
    """
    settings = runtime().settings
    tenant = _tenant(bool(settings.llm_transcribe_url))
    model = llm_gateway.admit(settings, tenant, request.form.get("model"), audio=True)
    upload = request.files.get("file")
    if upload is None:
        raise BadRequest("The request needs a file.", code="invalid_request")
    files = {"file": (upload.filename or "audio", upload.stream,
                      upload.mimetype or "application/octet-stream")}
    return _forward("transcription", tenant, model,
                    f"{settings.llm_transcribe_url}/audio/transcriptions",
                    _openai_headers(settings.llm_transcribe_api_key, None),
                    data=request.form.to_dict(flat=False), files=files)


def _openai_headers(key: str, content_type: str | None) -> dict[str, str]:
    headers = {"content-type": content_type} if content_type else {}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def _forward(api: str, tenant: Tenant, model: str, url: str, headers: dict[str, str], **body):
    # Uncompressed, so the usage can be read on the way and the bytes passed on as they are.
    headers["accept-encoding"] = "identity"
    tenant_id = tenant.id
    reason = llm_gateway.route_reason(request.headers)  # refused before any upstream call
    metered = Metered(model=model)
    started = time.perf_counter()
    try:
        answer = _client.send(_client.build_request("POST", url, headers=headers, **body), stream=True)
    except httpx.HTTPError as exc:
        log.warning("LLM gateway (%s) for tenant %s: provider unreachable (%s)", api, tenant_id,
                    type(exc).__name__)
        llm_gateway.record(tenant_id, api, 502, metered, _ms(started), reason)
        raise UpstreamUnreachable("The model provider cannot be reached just now.") from None
    latency = _ms(started)
    passed = {name: answer.headers[name] for name in PASS_BACK if name in answer.headers}
    if answer.status_code == 200 and answer.headers.get("content-type", "").startswith(
            "text/event-stream"):
        meter = StreamMeter(metered)

        def stream():
            try:
                for chunk in answer.iter_raw():
                    meter.feed(chunk)
                    yield chunk
            except httpx.HTTPError as exc:  # broke midway: end ours, the agent's SDK raises
                log.info("LLM gateway (%s) for tenant %s: stream ended (%s)", api, tenant_id,
                         type(exc).__name__)
            finally:
                answer.close()
                _record(tenant, api, 200, metered, latency, reason)

        passed["X-Accel-Buffering"] = "no"  # nginx: hand each event on as it comes
        passed["Cache-Control"] = "no-store"
        return Response(stream_with_context(stream()), status=200, headers=passed)
    try:
        raw = answer.read()
    except httpx.HTTPError:
        llm_gateway.record(tenant_id, api, 502, metered, latency, reason)
        raise UpstreamUnreachable("The model provider's answer broke off.") from None
    finally:
        answer.close()
    if answer.status_code == 200:
        _meter_document(raw, metered)
    _record(tenant, api, answer.status_code, metered, latency, reason)
    return Response(raw, status=answer.status_code, headers=passed)


def _record(tenant: Tenant, api: str, status: int, metered: Metered, latency: int, reason: str) -> None:
    call = llm_gateway.record(tenant.id, api, status, metered, latency, reason)
    if call.cost_cents > 0:
        rt = runtime()
        budget_warning.warn_if_crossed(tenant, rt.settings.plan_budget_cents, rt.tasks.send_notice)


def _meter_document(raw: bytes, metered: Metered) -> None:
    try:
        document = json.loads(raw)
    except ValueError:  # a transcription as plain text carries no usage
        return
    if isinstance(document, dict):
        if isinstance(document.get("model"), str) and document["model"]:
            metered.model = document["model"]
        metered.add_usage(document.get("usage"))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
