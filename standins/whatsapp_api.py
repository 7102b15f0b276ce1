"""A local WhatsApp Cloud API (Graph API) stand-in for tests, benchmarks and ``hermes demo``,
plus the webhooks Meta sends: signed message and status notifications.

Speaks the Graph API wire format (https://developers.facebook.com/docs/whatsapp/cloud-api/reference):

* ``POST /v23.0/{phone_number_id}/messages`` with ``Authorization: Bearer <token>`` and a JSON
  body (``messaging_product: whatsapp``, ``to``, ``type`` ``text`` or ``template``) answers
  ``{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages": [{"id":
  "wamid..."}]}``;
* ``GET /v23.0/{media_id}`` answers the media's ``{url, mime_type, sha256, file_size, id,
  messaging_product}``; ``GET`` of that ``url`` (bearer token again) answers the bytes;
* every refusal is a Graph error object ``{"error": {"message", "type", "code",
  "error_subcode", "fbtrace_id"}}`` (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes),
  HTTP 401 for a bad token, 400 otherwise unless scripted.

Failures are scripted: ``fail_next(130429)`` (throughput), ``fail_next(131047)`` (outside the
24-hour window), ``fail_next(131056)`` (pair rate limit) answer the next sends.  The stand-in
keeps every message sent (``sent``), so tests read what the user would see.

Webhooks: ``published_payload`` reads the published bodies (``payloads/whatsapp``, copied from
``standins/payloads/whatsapp``); ``message_body`` / ``status_body`` set the fields a scenario
needs; ``sign`` computes ``X-Hub-Signature-256``; ``post_webhook`` posts a signed body to the
app, and ``post_statuses`` posts a status for every message sent, as Meta does after a send.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.server
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources

from standins.scripted_server import ScriptedServer, send_json

API_VERSION = "v23.0"
# Graph error texts of the scripted codes (error-codes page).
ERROR_TEXTS = {
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    131047: ("Re-engagement message", ("More than 24 hours have passed since the recipient last "
             "replied to the sender number.")),
    131056: ("(Business Account, Consumer Account) pair rate limit hit",
             ("Too many messages sent from the sender phone number to the same recipient phone "
             "number in a short period of time.")),
    131026: ("Message undeliverable", "Unable to deliver message."),
    190: ("Invalid OAuth access token", "Invalid OAuth access token - Cannot parse access token"),
}


def published_payload(name: str) -> dict:
    """A published webhook body from ``standins/payloads/whatsapp`` (e.g. ``message_text.json``)."""
    path = resources.files("standins") / "payloads" / "whatsapp" / name
    return json.loads(path.read_text())


def message_body(name: str = "message_text.json", *, wa_id: str = "972987654321",
                 wamid: str | None = None, text: str | None = None,
                 timestamp: int | None = None) -> dict:
    """A published message body with its sender, id, time (default now) and text set."""
    body = published_payload(name)
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["from"] = wa_id
    body["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] = wa_id
    message["id"] = wamid or f"wamid.{secrets.token_hex(12)}"
    message["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    if text is not None:
        message["text"] = {"body": text}
    return body


def status_body(wamid: str, status: str, recipient: str = "972987654321",
                error_code: int | None = None) -> dict:
    """A published status body (``status_<status>.json``) about ``wamid``."""
    body = published_payload(f"status_{status}.json")
    item = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    item.update(id=wamid, recipient_id=recipient, timestamp=str(int(time.time())))
    if error_code is not None:
        item["errors"][0]["code"] = error_code
    return body


def sign(body: bytes, app_secret: str) -> str:
    """``X-Hub-Signature-256`` of ``body``: ``sha256=`` + hex HMAC-SHA256 with the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, app_secret: str) -> dict[str, str]:
    """The headers Meta sends with a webhook POST of ``body``."""
    return {"X-Hub-Signature-256": sign(body, app_secret), "Content-Type": "application/json"}


def post_webhook(url: str, body: dict, app_secret: str, timeout: float = 10.0) -> int:
    """POST ``body`` signed to ``url`` (the app's ``/webhooks/whatsapp``); return the HTTP status."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=signed_headers(data, app_secret))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class SentMessage:
    """A message the business sent: recipient, ``type``, text (a template's body parameter),
    template name (``""`` for text), wamid and monotonic time of arrival (seconds)."""

    to: str
    type: str
    text: str
    template: str
    wamid: str
    at: float


@dataclass
class GraphError:
    """A scripted Graph error answer: HTTP ``status`` and the error ``code``."""

    code: int
    status: int = 400


class WhatsAppApiStandin(ScriptedServer):
    """The Graph API for one business number on loopback; use as a context manager.

    Args:
        access_token: the only bearer token accepted.
        phone_number_id: the business number's id in the messages path.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v23.0`` (``WHATSAPP_API_BASE``).
        sent: every message accepted, in order.
        media: ``{media_id: (bytes, mime_type)}`` served by the media endpoints.
        requests: every ``messages`` POST, ``{"path", "headers", "json", "at"}`` (``at``:
            monotonic seconds), failed ones included.
    """

    thread_name = "whatsapp-standin"
    base_path = f"/{API_VERSION}"

    def __init__(self, access_token: str = "EAAG-test-token",
                 phone_number_id: str = "1122334455667"):
        super().__init__(responder=lambda body: None)
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.sent: list[SentMessage] = []
        self.media: dict[str, tuple[bytes, str]] = {}
        self._serial = itertools.count(1)
        self._state = threading.Lock()

    def fail_next(self, code: int, times: int = 1, status: int = 400) -> None:
        """Answer the next ``times`` sends with Graph error ``code`` (HTTP ``status``)."""
        self.script([GraphError(code, status)] * times)

    def add_media(self, media_id: str, content: bytes, mime_type: str) -> None:
        """Serve ``content`` as the media ``media_id``."""
        self.media[media_id] = (content, mime_type)

    def texts_to(self, wa_id: str) -> list[str]:
        """The texts (or template parameters) sent to ``wa_id``, in order."""
        with self._state:
            return [m.text for m in self.sent if m.to == wa_id]

    def post_statuses(self, url: str, app_secret: str, status: str = "delivered") -> list[int]:
        """POST a signed ``status`` callback for every message sent so far; return the HTTP
        statuses the app answered."""
        with self._state:
            sent = list(self.sent)
        return [post_webhook(url, status_body(m.wamid, status, m.to), app_secret) for m in sent]

    # -- request handling --------------------------------------------------------------------

    def _send(self, body: dict) -> tuple[int, dict]:
        reply = self._next_reply(body)
        if isinstance(reply, GraphError):
            return reply.status, _error(reply.code)
        if body.get("messaging_product") != "whatsapp" or not body.get("to"):
            return 400, _error(100, "(#100) The parameter messaging_product is required.")
        kind = body.get("type", "text")
        if kind == "text":
            text, template = str((body.get("text") or {}).get("body", "")), ""
            if not text or len(text) > 4096:
                return 400, _error(100, "(#100) Param text['body'] must be 1-4096 characters.")
        elif kind == "template":
            template = body["template"]["name"]
            params = body["template"].get("components", [{}])[0].get("parameters", [])
            text = params[0]["text"] if params else ""
        else:
            return 400, _error(131051, "Unsupported message type")
        wamid = f"wamid.HBgL{next(self._serial):08d}{secrets.token_hex(6)}"
        with self._state:
            self.sent.append(SentMessage(str(body["to"]), kind, text, template, wamid,
                                         time.monotonic()))
        return 200, {"messaging_product": "whatsapp",
                     "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                     "messages": [{"id": wamid}]}

    def _media_info(self, media_id: str) -> tuple[int, dict]:
        if media_id not in self.media:
            return 400, _error(100, f"(#100) Unsupported get request. Object with ID '{media_id}' "
                               "does not exist")
        content, mime = self.media[media_id]
        return 200, {"url": f"{self.base_url}/media-download/{media_id}", "mime_type": mime,
                     "sha256": hashlib.sha256(content).hexdigest(), "file_size": len(content),
                     "id": media_id, "messaging_product": "whatsapp"}


def _error(code: int, message: str | None = None) -> dict:
    title, detail = ERROR_TEXTS.get(code, ("Error", message or "Error"))
    return {"error": {"message": message or f"({code}) {title}", "type": "OAuthException",
                      "code": code, "error_data": {"messaging_product": "whatsapp",
                                                   "details": detail},
                      "error_subcode": 2494055 if code == 131047 else None,
                      "fbtrace_id": secrets.token_urlsafe(9)}}


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: WhatsAppApiStandin

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.owner.access_token}":
            return True
        send_json(self, 401, _error(190))
        return False

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self._authorized():
            return None
        path = self.path.split("?")[0]
        if path != f"{WhatsAppApiStandin.base_path}/{self.owner.phone_number_id}/messages":
            return send_json(self, 400, _error(100, "(#100) Unsupported post request."))
        try:
            payload = json.loads(body)
        except ValueError:
            return send_json(self, 400, _error(100, "(#100) Invalid JSON"))
        with self.owner._lock:
            self.owner.requests.append({"path": path, "headers": dict(self.headers),
                                        "json": copy.deepcopy(payload), "at": time.monotonic()})
        status, answer = self.owner._send(payload)
        return send_json(self, status, answer)

    def do_GET(self):
        if not self._authorized():
            return None
        path = self.path.split("?")[0].removeprefix(WhatsAppApiStandin.base_path + "/")
        if path.startswith("media-download/"):
            content, mime = self.owner.media.get(path.split("/", 1)[1], (None, ""))
            if content is None:
                return send_json(self, 404, _error(100, "not found"))
            self.send_response(200)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return None
        status, answer = self.owner._media_info(path)
        return send_json(self, status, answer)

    def log_message(self, *_args):
        return


WhatsAppApiStandin.handler_class = _Handler
