"""A local stand-in of the Stripe REST API and its hosted pages (Checkout, customer portal).

The real ``stripe`` SDK runs against it unchanged when pointed at ``base_url``
(``stripe.StripeClient(secret_key, base_addresses={"api": base_url})``)::

    with StripeStandin(webhook_url=..., webhook_secret="whsec_...",
                       prices={"light": "price_light", "heavy": "price_heavy"}) as api:
        ...

Wire format (https://docs.stripe.com/api): ``Authorization: Bearer <secret key>`` (wrong or
missing key: 401 with Stripe's error object), form-encoded parameters with bracket notation
(``line_items[0][price]=...``, arrays as ``[0]``, ``[1]``), JSON answers with a ``Request-Id``
header, list objects (``{"object": "list", "data", "has_more", "url"}``) and error objects
(``{"error": {"type", "code", "message", "param", "doc_url"}}``).  ``Idempotency-Key`` replays the
first answer (``Idempotent-Replayed: true``), and a reuse with other parameters is a 400
``idempotency_error``, as documented (https://docs.stripe.com/api/idempotent_requests).

Objects are Stripe's published fixtures (``payloads/stripe/latest``, the 2026 shapes: the
subscription's period fields live on its items) with the scenario's fields set.  The billing
portal session has no published fixture; its fields follow the API reference of
``billing_portal.session``.

Hosted pages, marked LOCAL TEST MODE: a Checkout Session's ``url`` is ``/pay/<id>``, whose Pay
button "pays": it creates the customer (unless the session named one), an active subscription
and a paid invoice, delivers ``checkout.session.completed``, ``customer.subscription.created``
and ``invoice.paid`` to ``webhook_url`` signed like Stripe (``stripe_events.sign``), then
answers 303 to ``success_url`` with ``{CHECKOUT_SESSION_ID}`` replaced.  A portal session's
``url`` is ``/portal/<id>``: the customer's subscriptions with a "Cancel subscription" button
and a link back to ``return_url``.  Later lifecycle events come from ``fail_payment``,
``recover_payment`` and ``cancel``.

Webhooks are delivered once each, in order, by a sender thread, as Stripe delivers them
asynchronously: an API call that emits an event (``DELETE /v1/subscriptions/:id``) answers
without waiting, so a control plane calling the API is never blocked on its own webhook.  The
hosted pages and the lifecycle methods wait for delivery (``flush``) before they answer, so a
browser lands on the success page after the control plane has the events.  Each delivery is kept
in ``deliveries``.
"""

from __future__ import annotations

import calendar
import copy
import html
import http.server
import itertools
import json
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import httpx

from standins import stripe_events
from standins.scripted_server import ScriptedServer, send_json

# Plan prices in US cents per month (DESIGN.md, "Plans and sizes": Light $29, Heavy $79).
PLAN_AMOUNTS = {"light": 2900, "heavy": 7900}
# Checkout Sessions expire 24 hours after creation by default
# (https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-expires_at).
SESSION_TTL = 24 * 3600
# Statuses a default subscription list leaves out ("By default, returns a list of subscriptions
# that have not been canceled", https://docs.stripe.com/api/subscriptions/list).
_HIDDEN_BY_DEFAULT = {"canceled"}
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_DOCS = "https://docs.stripe.com/error-codes/"


class StripeError(Exception):
    """An error answer in Stripe's shape: HTTP status, ``type``, ``code``, message, ``param``."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict:
        """The ``{"error": {...}}`` object Stripe answers with."""
        error = {"type": self.kind, "message": self.message}
        if self.code:
            error.update(code=self.code, doc_url=_DOCS + self.code.replace("_", "-"))
        if self.param:
            error["param"] = self.param
        return {"error": error}


@dataclass
class Reply:
    """One HTTP answer: ``body`` is JSON (dict) or a text page (str)."""

    status: int
    body: dict | str
    headers: dict[str, str] = field(default_factory=dict)


def parse_form(text: str) -> dict:
    """Decode an ``application/x-www-form-urlencoded`` body in Stripe's bracket notation.

    ``a[b][0][c]=1&a[b][1][c]=2`` becomes ``{"a": {"b": [{"c": "1"}, {"c": "2"}]}}``: nested
    keys are objects, and an object whose keys are all integers is a list in index order.
    Values stay strings, as on the wire.

    Raises:
        StripeError: a key is malformed or used both as a value and as an object (400).
    """
    root: dict = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if not match:
            raise StripeError(400, f"Invalid parameter name: {key}", code="parameter_unknown",
                              param=key)
        path = [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part or str(len(node)), {})
            if not isinstance(node, dict):
                raise StripeError(400, f"Invalid value for {key}", param=key)
        last = path[-1] or str(len(node))
        if isinstance(node.get(last), dict):
            raise StripeError(400, f"Invalid value for {key}", param=key)
        node[last] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[k]) for k in sorted(node, key=int)]
    return {k: _lists(v) for k, v in node.items()}


def add_month(ts: int) -> int:
    """Return ``ts`` (Unix seconds, UTC) one calendar month later, the day clamped to the
    month's length (Stripe's monthly billing: Jan 31 renews on Feb 28/29)."""
    moment = datetime.fromtimestamp(ts, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _page(title: str, body: str) -> str:
    """A hosted page: dark, phone-width readable, marked LOCAL TEST MODE."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - LOCAL TEST MODE</title>
<style>
body {{ margin: 0; background: #0f1115; color: #e6e8ee; font: 16px/1.5 system-ui, sans-serif; }}
main {{ max-width: 30rem; margin: 0 auto; padding: 1rem; }}
.test {{ background: #3a2f00; color: #ffe08a; padding: .6rem 1rem; text-align: center; font-weight: 700; }}
.card {{ background: #171a21; border: 1px solid #2a2f3a; border-radius: 10px; padding: 1rem; margin: 1rem 0; }}
button {{ font: inherit; font-weight: 600; background: #6ea8ff; color: #0b1020; border: 0;
  border-radius: 8px; padding: .7rem 1.2rem; cursor: pointer; width: 100%; }}
button.danger {{ background: #ff6b6b; color: #1b0505; }}
a {{ color: #6ea8ff; }} :focus-visible {{ outline: 3px solid #6ea8ff; outline-offset: 2px; }}
</style></head><body>
<p class="test" role="status">LOCAL TEST MODE - no card is charged</p>
<main><h1>{html.escape(title)}</h1>{body}</main></body></html>"""


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: StripeStandin

    def log_message(self, *args):  # the default writes every request to stderr
        pass

    def _serve(self):
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        request = {"method": self.command, "path": split.path, "query": split.query,
                   "form": raw, "headers": dict(self.headers)}
        self.owner.requests.append(request)
        try:
            reply = self.owner._next_reply(request)
        except StripeError as err:
            reply = Reply(err.status, err.body())
        except Exception as exc:  # noqa: BLE001 - a stand-in bug answers as Stripe's api_error,
            # not as a dropped connection the SDK would retry and then call a network error
            reply = Reply(500, StripeError(500, f"stand-in error: {exc!r}", kind="api_error").body())
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        headers = {"Request-Id": f"req_{secrets.token_hex(7)}", **reply.headers}
        if isinstance(reply.body, dict):
            send_json(self, reply.status, reply.body, headers)
            return
        data = reply.body.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve


class StripeStandin(ScriptedServer):
    """The Stripe API and hosted pages on a loopback port (a context manager).

    Scripted replies (``script([Reply(...)])``) answer the next requests before the
    stand-in's own logic, e.g. to inject a Stripe error.

    Args:
        webhook_url: where events are POSTed (``None``: events are only kept in ``events``).
        webhook_secret: the endpoint's signing secret (``whsec_...``).
        prices: ``{plan: price_id}``; each becomes a monthly recurring USD price of
            ``PLAN_AMOUNTS[plan]`` cents (plans not in ``PLAN_AMOUNTS``: 1000 cents).
        secret_key: the only API key accepted (default: a random ``sk_test_...``).
        host: bind address (loopback).

    Attributes:
        base_url: ``http://host:port`` once started (the SDK's API base address).
        secret_key: the API key to give the SDK.
        customers, sessions, subscriptions, invoices, prices, portal_sessions: objects by id.
        events: every event created, in order; deliveries: ``(event type, HTTP status or
            error text)`` of every webhook POST.
    """

    handler_class = _Handler
    thread_name = "stripe-standin"

    def __init__(self, webhook_url: str | None = None, webhook_secret: str = "",
                 prices: dict[str, str] | None = None, secret_key: str | None = None,
                 host: str = "127.0.0.1"):
        super().__init__(self._route, host)
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.secret_key = secret_key or f"sk_test_{secrets.token_hex(12)}"
        self.customers: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.portal_sessions: dict[str, dict] = {}
        self.prices = {pid: self._price(plan, pid) for plan, pid in (prices or {}).items()}
        self.events: list[dict] = []
        self.deliveries: list[tuple[str, int | str]] = []
        self._line_items: dict[str, list[dict]] = {}
        self._subscription_data: dict[str, dict] = {}
        self._idempotent: dict[str, tuple[str, Reply]] = {}
        self._state = threading.RLock()
        self._serial = itertools.count(1)
        self._outbox: queue.Queue = queue.Queue()
        self._sender: threading.Thread | None = None

    def start(self) -> str:
        """Serve the API and start the webhook sender; return ``base_url``."""
        base_url = super().start()
        self._sender = threading.Thread(target=self._send_webhooks, name="stripe-webhooks",
                                        daemon=True)
        self._sender.start()
        return base_url

    def stop(self) -> None:
        """Deliver what is queued (up to 30 s), stop the sender and the server."""
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(timeout=30)
            self._sender = None
        super().stop()

    # -- objects ----------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(4)}{next(self._serial):06d}"

    @staticmethod
    def _price(plan: str, price_id: str) -> dict:
        price = copy.deepcopy(stripe_events.published_object("price"))
        amount = PLAN_AMOUNTS.get(plan, 1000)
        price.update(id=price_id, nickname=f"Hermes Max {plan.title()}", metadata={"plan": plan},
                     unit_amount=amount, unit_amount_decimal=str(amount), currency="usd",
                     created=int(time.time()))
        return price

    def _get(self, table: dict, kind: str, object_id: str) -> dict:
        if object_id not in table:
            raise StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing",
                              param="id")
        return table[object_id]

    def _customer(self, email: str | None, name: str | None = None,
                  metadata: dict | None = None) -> dict:
        customer = copy.deepcopy(stripe_events.published_object("customer"))
        customer.update(id=self._id("cus"), email=email, name=name, metadata=metadata or {},
                        created=int(time.time()), invoice_prefix=secrets.token_hex(4).upper())
        self.customers[customer["id"]] = customer
        return customer

    # -- routing ----------------------------------------------------------------------------
    _ROUTES = (
        ("POST", r"/v1/customers", "_create_customer"),
        ("GET", r"/v1/customers/(?P<id>[^/]+)", "_read_customer"),
        ("POST", r"/v1/checkout/sessions", "_create_session"),
        ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", "_read_session"),
        ("POST", r"/v1/billing_portal/sessions", "_create_portal_session"),
        ("GET", r"/v1/invoices", "_list_invoices"),
        ("GET", r"/v1/subscriptions", "_list_subscriptions"),
        ("GET", r"/v1/subscriptions/(?P<id>[^/]+)", "_read_subscription"),
        ("POST", r"/v1/subscriptions/(?P<id>[^/]+)", "_update_subscription"),
        ("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", "_cancel_subscription"),
        ("GET", r"/v1/prices/(?P<id>[^/]+)", "_read_price"),
    )
    _PAGES = (
        ("GET", r"/pay/(?P<id>[^/]+)", "_pay_page"),
        ("POST", r"/pay/(?P<id>[^/]+)", "_pay"),
        ("GET", r"/portal/(?P<id>[^/]+)", "_portal_page"),
        ("POST", r"/portal/(?P<id>[^/]+)/cancel", "_portal_cancel"),
        ("GET", r"/invoices/(?P<id>[^/]+)", "_invoice_page"),
    )

    def _route(self, request: dict) -> Reply:
        method, path = request["method"], request["path"]
        for routes, api in ((self._PAGES, False), (self._ROUTES, True)):
            for verb, pattern, name in routes:
                match = re.fullmatch(pattern, path)
                if match and verb == method:
                    params = parse_form(request["form"] if method == "POST" else request["query"])
                    if not api:
                        with self._state:
                            reply = getattr(self, name)(match["id"], params)
                        if method == "POST":
                            self.flush()
                        return reply
                    self._authenticate(request["headers"])
                    return self._api(request, name, match.groupdict().get("id"), params)
        if path.startswith("/v1/"):
            self._authenticate(request["headers"])
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def _authenticate(self, headers: dict) -> None:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not auth:
            raise StripeError(401, "You did not provide an API key. You need to provide your API "
                                   "key in the Authorization header, using Bearer auth.")
        key = auth.removeprefix("Bearer ").strip()
        if not secrets.compare_digest(key.encode(), self.secret_key.encode()):
            shown = f"{key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}" if len(key) > 12 else key
            raise StripeError(401, f"Invalid API Key provided: {shown}")

    def _api(self, request: dict, name: str, object_id: str | None, params: dict) -> Reply:
        key = next((v for k, v in request["headers"].items() if k.lower() == "idempotency-key"), None)
        if request["method"] != "POST" or not key:
            with self._state:
                return Reply(200, getattr(self, name)(object_id, params))
        with self._state:
            seen = self._idempotent.get(key)
            if seen is not None:
                if seen[0] != request["form"]:
                    raise StripeError(400, "Keys for idempotent requests can only be used with "
                                           "the same parameters they were first used with.",
                                      kind="idempotency_error")
                return Reply(seen[1].status, seen[1].body, {"Idempotent-Replayed": "true",
                                                            "Idempotency-Key": key})
            reply = Reply(200, getattr(self, name)(object_id, params), {"Idempotency-Key": key})
            self._idempotent[key] = (request["form"], reply)
            return reply

    # -- API endpoints ----------------------------------------------------------------------
    def _create_customer(self, _id, params: dict) -> dict:
        return self._customer(params.get("email"), params.get("name"), params.get("metadata"))

    def _read_customer(self, customer_id: str, _params) -> dict:
        return self._get(self.customers, "customer", customer_id)

    def _create_session(self, _id, params: dict) -> dict:
        for required in ("mode", "success_url"):
            if not params.get(required):
                raise StripeError(400, f"Missing required param: {required}.",
                                  code="parameter_missing", param=required)
        if params["mode"] != "subscription":
            raise StripeError(400, "This stand-in sells subscriptions only (mode=subscription).",
                              code="parameter_invalid_string", param="mode")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise StripeError(400, "Missing required param: line_items.",
                              code="parameter_missing", param="line_items")
        for index, item in enumerate(items):
            price_id = item.get("price") if isinstance(item, dict) else None
            if not price_id:
                raise StripeError(400, f"Missing required param: line_items[{index}][price].",
                                  code="parameter_missing", param=f"line_items[{index}][price]")
            if price_id not in self.prices:
                raise StripeError(400, f"No such price: '{price_id}'", code="resource_missing",
                                  param=f"line_items[{index}][price]")
        customer = params.get("customer")
        if customer and params.get("customer_email"):
            raise StripeError(400, "You may only specify one of these parameters: customer, "
                                   "customer_email.", param="customer_email")
        if customer:
            self._get(self.customers, "customer", customer)
        session = copy.deepcopy(stripe_events.published_object("checkout.session"))
        now = int(time.time())
        total = sum(self.prices[i["price"]]["unit_amount"] * int(i.get("quantity") or 1)
                    for i in items)
        session_id = f"cs_test_{secrets.token_urlsafe(24).replace('-', 'a').replace('_', 'b')}"
        session.update(
            id=session_id, mode="subscription", status="open", payment_status="unpaid",
            created=now, expires_at=now + SESSION_TTL, currency="usd",
            amount_subtotal=total, amount_total=total,
            client_reference_id=params.get("client_reference_id"), customer=customer,
            customer_email=params.get("customer_email"), metadata=params.get("metadata") or {},
            success_url=params["success_url"], cancel_url=params.get("cancel_url"),
            subscription=None, invoice=None, payment_intent=None,
            url=f"{self.base_url}/pay/{session_id}")
        session["customer_details"] = None
        self.sessions[session_id] = session
        self._line_items[session_id] = items
        self._subscription_data[session_id] = params.get("subscription_data") or {}
        return session

    def _read_session(self, session_id: str, _params) -> dict:
        return self._get(self.sessions, "checkout.session", session_id)

    def _create_portal_session(self, _id, params: dict) -> dict:
        customer = params.get("customer")
        if not customer:
            raise StripeError(400, "Missing required param: customer.", code="parameter_missing",
                              param="customer")
        self._get(self.customers, "customer", customer)
        portal_id = self._id("bps")
        portal = {"id": portal_id, "object": "billing_portal.session",
                  "configuration": "bpc_standin", "created": int(time.time()),
                  "customer": customer, "flow": None, "livemode": False, "locale": None,
                  "on_behalf_of": None, "return_url": params.get("return_url"),
                  "url": f"{self.base_url}/portal/{portal_id}"}
        self.portal_sessions[portal_id] = portal
        return portal

    def _list(self, objects: list[dict], params: dict, url: str) -> dict:
        try:
            limit = int(params.get("limit") or 10)
        except ValueError:
            raise StripeError(400, "Invalid integer: limit", param="limit") from None
        if not 1 <= limit <= 100:
            raise StripeError(400, "This value must be between 1 and 100.", param="limit")
        newest = sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)
        return {"object": "list", "data": newest[:limit], "has_more": len(newest) > limit,
                "url": url}

    def _list_invoices(self, _id, params: dict) -> dict:
        found = [i for i in self.invoices.values()
                 if params.get("customer") in (None, i["customer"])
                 and params.get("subscription") in (None, self._invoice_subscription(i))]
        return self._list(found, params, "/v1/invoices")

    def _list_subscriptions(self, _id, params: dict) -> dict:
        status = params.get("status")
        found = [s for s in self.subscriptions.values()
                 if params.get("customer") in (None, s["customer"])
                 and (status == "all" or s["status"] == status
                      or (status is None and s["status"] not in _HIDDEN_BY_DEFAULT))]
        return self._list(found, params, "/v1/subscriptions")

    def _read_subscription(self, sub_id: str, _params) -> dict:
        return self._get(self.subscriptions, "subscription", sub_id)

    def _update_subscription(self, sub_id: str, params: dict) -> dict:
        sub = self._get(self.subscriptions, "subscription", sub_id)
        previous = {}
        if "cancel_at_period_end" in params:
            flag = params["cancel_at_period_end"]
            if flag not in ("true", "false"):
                raise StripeError(400, "Invalid boolean: " + flag, param="cancel_at_period_end")
            if sub["status"] == "canceled":
                raise StripeError(400, "A canceled subscription can only update its "
                                       "cancellation_details and metadata.")
            previous = {"cancel_at_period_end": sub["cancel_at_period_end"],
                        "cancel_at": sub["cancel_at"]}
            sub["cancel_at_period_end"] = flag == "true"
            sub["cancel_at"] = sub["items"]["data"][0]["current_period_end"] if flag == "true" else None
        if isinstance(params.get("metadata"), dict):
            previous["metadata"] = dict(sub["metadata"])
            sub["metadata"].update(params["metadata"])
        if previous:
            self._emit("customer.subscription.updated", sub, previous)
        return sub

    def _cancel_subscription(self, sub_id: str, _params) -> dict:
        sub = self._get(self.subscriptions, "subscription", sub_id)
        if sub["status"] == "canceled":
            raise StripeError(400, f"No such subscription: '{sub_id}' is already canceled.",
                              code="resource_missing", param="id")
        return self._cancel(sub_id)

    def _read_price(self, price_id: str, _params) -> dict:
        return self._get(self.prices, "price", price_id)

    # -- hosted pages -----------------------------------------------------------------------
    def _pay_page(self, session_id: str, _params) -> Reply:
        session = self._get(self.sessions, "checkout.session", session_id)
        if session["status"] != "open":
            return Reply(200, _page("Already paid", f'<p>This checkout is {session["status"]}.</p>'
                                    f'<p><a href="{html.escape(self._success_url(session))}">'
                                    "Continue</a></p>"))
        lines = "".join(
            f"<li>{html.escape(self.prices[i['price']]['nickname'])}: "
            f"${self.prices[i['price']]['unit_amount'] / 100:.2f} per month</li>"
            for i in self._line_items[session_id])
        email = session["customer_email"] or (self.customers.get(session["customer"] or "") or {}).get("email")
        cancel = (f'<p><a href="{html.escape(session["cancel_url"])}">Cancel and go back</a></p>'
                  if session["cancel_url"] else "")
        body = (f'<div class="card"><ul>{lines}</ul><p>Billed to {html.escape(email or "-")}</p>'
                f'<p>Total today: ${session["amount_total"] / 100:.2f}</p></div>'
                f'<form method="post" action="/pay/{session_id}">'
                '<button type="submit">Pay (test mode)</button></form>' + cancel)
        return Reply(200, _page("Subscribe to Hermes Max", body))

    def _pay(self, session_id: str, _params) -> Reply:
        session = self._get(self.sessions, "checkout.session", session_id)
        if session["status"] == "open":
            self._complete_checkout(session_id)
        return Reply(303, "", {"Location": self._success_url(session)})

    @staticmethod
    def _success_url(session: dict) -> str:
        return session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])

    def _portal_page(self, portal_id: str, _params, notice: str = "") -> Reply:
        portal = self._get(self.portal_sessions, "billing_portal.session", portal_id)
        rows = []
        for sub in self._subscriptions_of(portal["customer"]):
            price = sub["items"]["data"][0]["price"]
            end = datetime.fromtimestamp(sub["items"]["data"][0]["current_period_end"], UTC)
            row = (f'<div class="card"><p>{html.escape(price["nickname"] or price["id"])}: '
                   f'{html.escape(sub["status"])}, renews {end:%Y-%m-%d}</p>')
            if sub["status"] != "canceled":
                row += (f'<form method="post" action="/portal/{portal_id}/cancel">'
                        f'<input type="hidden" name="subscription" value="{html.escape(sub["id"])}">'
                        '<button type="submit" class="danger">Cancel subscription</button></form>')
            rows.append(row + "</div>")
        back = (f'<p><a href="{html.escape(portal["return_url"])}">Return to Hermes Max</a></p>'
                if portal["return_url"] else "")
        body = (f'<p role="status">{html.escape(notice)}</p>' if notice else "") + (
            "".join(rows) or "<p>No subscriptions.</p>") + back
        return Reply(200, _page("Your subscription", body))

    def _portal_cancel(self, portal_id: str, params: dict) -> Reply:
        portal = self._get(self.portal_sessions, "billing_portal.session", portal_id)
        sub = self.subscriptions.get(params.get("subscription") or "")
        if sub is None or sub["customer"] != portal["customer"]:
            return Reply(404, _page("Not found", "<p>No such subscription.</p>"))
        if sub["status"] != "canceled":
            self._cancel(sub["id"])
        return self._portal_page(portal_id, {}, notice="Your subscription is canceled.")

    def _invoice_page(self, invoice_id: str, _params) -> Reply:
        invoice = self._get(self.invoices, "invoice", invoice_id)
        body = (f'<div class="card"><p>Invoice {html.escape(invoice["number"])}</p>'
                f'<p>Amount paid: ${invoice["amount_paid"] / 100:.2f}</p>'
                f'<p>Status: {html.escape(invoice["status"])}</p></div>')
        return Reply(200, _page("Invoice", body))

    # -- lifecycle (also called by tests and the demo) ------------------------------------------
    def complete_checkout(self, session_id: str) -> dict:
        """Pay an open Checkout Session as the hosted page's Pay button does; return once
        the webhooks are delivered.

        Returns:
            The completed session (``customer``, ``subscription``, ``invoice`` set).
        """
        with self._state:
            session = self._complete_checkout(session_id)
        self.flush()
        return session

    def fail_payment(self, subscription_id: str) -> dict:
        """A renewal charge fails: an open invoice, ``invoice.payment_failed``, and the
        subscription ``past_due`` (``customer.subscription.updated``).  Returns the invoice
        once the webhooks are delivered."""
        with self._state:
            sub = self._get(self.subscriptions, "subscription", subscription_id)
            invoice = self._new_invoice(sub, "open", "subscription_cycle")
            sub["latest_invoice"] = invoice["id"]
            self._emit("invoice.payment_failed", invoice)
            previous = {"status": sub["status"]}
            sub["status"] = "past_due"
            self._emit("customer.subscription.updated", sub, previous)
        self.flush()
        return invoice

    def recover_payment(self, subscription_id: str) -> dict:
        """A retry succeeds: the open invoices are paid (``invoice.paid``) and the subscription
        is ``active`` again (``customer.subscription.updated``).  Returns the subscription once
        the webhooks are delivered."""
        with self._state:
            sub = self._get(self.subscriptions, "subscription", subscription_id)
            for invoice in self.invoices.values():
                if self._invoice_subscription(invoice) == subscription_id and invoice["status"] == "open":
                    self._mark_paid(invoice)
                    self._emit("invoice.paid", invoice)
            previous = {"status": sub["status"]}
            sub["status"] = "active"
            self._emit("customer.subscription.updated", sub, previous)
        self.flush()
        return sub

    def cancel(self, subscription_id: str) -> dict:
        """Cancel at once (``customer.subscription.deleted``); returns the subscription once
        the webhook is delivered."""
        with self._state:
            sub = self._cancel(subscription_id)
        self.flush()
        return sub

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued webhook has been delivered (or failed).

        Raises:
            TimeoutError: deliveries still pending after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._outbox.all_tasks_done:
            while self._outbox.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._outbox.all_tasks_done.wait(remaining):
                    raise TimeoutError(f"webhooks still pending after {timeout}s")

    def _complete_checkout(self, session_id: str) -> dict:
        with self._state:
            session = self._get(self.sessions, "checkout.session", session_id)
            customer_id = session["customer"]
            if customer_id is None:
                customer_id = self._customer(session["customer_email"])["id"]
            email = self.customers[customer_id]["email"]
            sub = self._new_subscription(customer_id, self._line_items[session_id],
                                         self._subscription_data[session_id])
            invoice = self._new_invoice(sub, "paid", "subscription_create")
            sub["latest_invoice"] = invoice["id"]
            session.update(status="complete", payment_status="paid", customer=customer_id, url=None,
                           subscription=sub["id"], invoice=invoice["id"],
                           customer_details={"address": None, "email": email, "name": None,
                                             "phone": None, "tax_exempt": "none",
                                             "tax_ids": []})
            self._emit("checkout.session.completed", session)
            self._emit("customer.subscription.created", sub)
            self._emit("invoice.paid", invoice)
            return session

    def _cancel(self, subscription_id: str) -> dict:
        sub = self._get(self.subscriptions, "subscription", subscription_id)
        now = int(time.time())
        sub.update(status="canceled", canceled_at=now, ended_at=now)
        sub["cancellation_details"] = {"comment": None, "feedback": None,
                                       "reason": "cancellation_requested"}
        self._emit("customer.subscription.deleted", sub)
        return sub

    def _subscriptions_of(self, customer_id: str) -> list[dict]:
        return [s for s in self.subscriptions.values() if s["customer"] == customer_id]

    def _new_subscription(self, customer_id: str, items: list[dict], data: dict) -> dict:
        sub = copy.deepcopy(stripe_events.published_object("subscription"))
        now = int(time.time())
        sub_id = self._id("sub")
        template = sub["items"]["data"][0]
        sub["items"]["data"] = []
        for item in items:
            line = copy.deepcopy(template)
            line.update(id=self._id("si"), created=now, subscription=sub_id,
                        price=copy.deepcopy(self.prices[item["price"]]),
                        quantity=int(item.get("quantity") or 1),
                        current_period_start=now, current_period_end=add_month(now))
            line.pop("plan", None)  # the legacy Plan mirror; prices carry everything read
            sub["items"]["data"].append(line)
        sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
        sub.update(id=sub_id, customer=customer_id, status="active", created=now, start_date=now,
                   billing_cycle_anchor=now, cancel_at=None, canceled_at=None, ended_at=None,
                   cancel_at_period_end=False, trial_start=None, trial_end=None,
                   pending_update=None, pause_collection=None, schedule=None,
                   transfer_data=None, metadata=dict(data.get("metadata") or {}),
                   latest_invoice=None, next_pending_invoice_item_invoice=None)
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
        self.subscriptions[sub_id] = sub
        return sub

    def _new_invoice(self, sub: dict, status: str, reason: str) -> dict:
        invoice = copy.deepcopy(stripe_events.published_object("invoice"))
        customer = self.customers[sub["customer"]]
        now = int(time.time())
        invoice_id = self._id("in")
        item = sub["items"]["data"][0]
        amount = sum(i["price"]["unit_amount"] * i["quantity"] for i in sub["items"]["data"])
        count = sum(1 for i in self.invoices.values() if i["customer"] == customer["id"]) + 1
        line = invoice["lines"]["data"][0]
        line.update(id=self._id("il"), invoice=invoice_id, amount=amount, subtotal=amount,
                    description=f"1 × {item['price']['nickname']} (at "
                                f"${item['price']['unit_amount'] / 100:.2f} / month)",
                    period={"start": item["current_period_start"], "end": item["current_period_end"]},
                    quantity=1, subscription=sub["id"])
        line["parent"] = {"invoice_item_details": None, "type": "subscription_item_details",
                          "subscription_item_details": {
                              "invoice_item": None, "proration": False, "proration_details": {
                                  "credited_items": None},
                              "subscription": sub["id"], "subscription_item": item["id"]}}
        line["pricing"] = {"type": "price_details", "unit_amount_decimal": str(amount),
                           "price_details": {"price": item["price"]["id"],
                                             "product": item["price"]["product"]}}
        invoice["lines"]["url"] = f"/v1/invoices/{invoice_id}/lines"
        invoice.update(
            id=invoice_id, customer=customer["id"], customer_email=customer["email"],
            number=f"{customer['invoice_prefix']}-{count:04d}", status=status,
            billing_reason=reason, created=now, effective_at=now, due_date=None,
            period_start=item["current_period_start"], period_end=item["current_period_end"],
            amount_due=amount, amount_paid=0, amount_remaining=amount, amount_overpaid=0,
            subtotal=amount, subtotal_excluding_tax=amount, total=amount,
            total_excluding_tax=amount, attempted=True, attempt_count=1,
            hosted_invoice_url=f"{self.base_url}/invoices/{invoice_id}",
            next_payment_attempt=now + 3 * 86400 if status == "open" else None,
            last_finalization_error=None, from_invoice=None, webhooks_delivered_at=now,
            auto_advance=status == "open",
            parent={"quote_details": None, "type": "subscription_details",
                    "subscription_details": {"metadata": dict(sub["metadata"]),
                                             "subscription": sub["id"]}})
        invoice["status_transitions"] = {"finalized_at": now, "marked_uncollectible_at": None,
                                         "paid_at": None, "voided_at": None}
        if status == "paid":
            self._mark_paid(invoice)
        self.invoices[invoice_id] = invoice
        return invoice

    @staticmethod
    def _mark_paid(invoice: dict) -> None:
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0,
                       next_payment_attempt=None, auto_advance=False)
        invoice["status_transitions"]["paid_at"] = int(time.time())

    @staticmethod
    def _invoice_subscription(invoice: dict) -> str | None:
        return ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")

    # -- webhooks ---------------------------------------------------------------------------
    def _emit(self, event_type: str, obj: dict, previous: dict | None = None) -> dict:
        """Record an event for ``obj`` (a snapshot) and queue it for ``webhook_url``."""
        event = stripe_events.event(event_type, copy.deepcopy(obj), self._id("evt"))
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        self.events.append(event)
        if self.webhook_url:
            self._outbox.put(event)
        return event

    def _send_webhooks(self) -> None:
        while (event := self._outbox.get()) is not None and self.webhook_url:
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                       "Stripe-Signature": stripe_events.sign(body, self.webhook_secret)}
            status: int | str
            try:
                status = httpx.post(self.webhook_url, content=body, headers=headers,
                                    timeout=30).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            self.deliveries.append((event["type"], status))
            self._outbox.task_done()
        self._outbox.task_done()
