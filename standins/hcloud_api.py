"""A local stand-in of the Hetzner Cloud API (``https://api.hetzner.cloud/v1``) for tests.

It speaks the published request and response shapes (docs.hetzner.cloud: Servers, Server Types,
Images, Actions, "Pagination", "Label Selector", "Rate Limiting", "Errors") for the subset Hermes
uses, so the official ``hcloud`` library runs against it unchanged::

    with HcloudStandin() as api:
        client = hcloud.Client(token=api.token, api_endpoint=api.url)

Behaviour worth knowing: an action is ``running`` when created and ``success`` from the first time
it is read (or when the resource it belongs to is read); ``inject(status, count)`` makes the next
``count`` requests fail (429 carries ``RateLimit-Limit/Remaining/Reset`` headers, as Hetzner's do).
Server types include the current names (cx23, cx33, cx43, cx53, cpx22, ...) and the deprecated
cx22/cx32/cx42 with ``deprecation`` objects; cx21/cx41 no longer exist at all.

Given ``machines`` (an object with ``boot(server, user_data)``, ``power_off(id)``,
``power_on(id)`` and ``delete(id)``, e.g. ``rehearsal.vm.ChrootMachines``), servers "boot":
create runs the server's user data in a background thread, poweroff/poweron stop and start its
units, delete stops them and removes the server's root.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import queue
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

_NOW = "2026-01-05T10:00:00+00:00"
_FSN1 = {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
         "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
         "network_zone": "eu-central"}
_DEPRECATION = {"announced": "2025-10-16T06:00:00+00:00",
                "unavailable_after": "2026-01-01T00:00:00+00:00"}
# (id, name, cores, memory GB, disk GB, cpu_type, deprecated)
_TYPES = [(104, "cx22", 2, 4.0, 40, "shared", True), (105, "cx32", 4, 8.0, 80, "shared", True),
          (106, "cx42", 8, 16.0, 160, "shared", True), (114, "cx23", 2, 4.0, 40, "shared", False),
          (115, "cx33", 4, 8.0, 80, "shared", False), (116, "cx43", 8, 16.0, 160, "shared", False),
          (117, "cx53", 16, 32.0, 320, "shared", False),
          (120, "cpx22", 2, 4.0, 80, "shared", False), (121, "cpx32", 4, 8.0, 160, "shared", False),
          (122, "cpx42", 8, 16.0, 320, "shared", False)]


def server_type_payload(tid, name, cores, memory, disk, cpu_type, deprecated) -> dict:
    """Return one server type object as ``GET /v1/server_types`` lists it."""
    deprecation = dict(_DEPRECATION) if deprecated else None
    price = {"net": "3.4900000000", "gross": "4.1531000000000000"}
    return {
        "id": tid, "name": name, "description": name.upper(), "cores": cores, "memory": memory,
        "disk": disk, "prices": [{"location": loc, "price_hourly": price, "price_monthly": price,
                                  "included_traffic": 21990232555520,
                                  "price_per_tb_traffic": price} for loc in ("fsn1", "nbg1", "hel1")],
        "storage_type": "local", "cpu_type": cpu_type, "architecture": "x86", "category":
        "cost_optimized", "deprecated": deprecated, "deprecation": deprecation,
        "locations": [{"id": lid, "name": loc, "deprecation": deprecation, "available":
                       not deprecated, "recommended": not deprecated}
                      for lid, loc in ((1, "fsn1"), (2, "nbg1"), (3, "hel1"))],
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Evaluate a Hetzner label selector (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``,
    ``k notin (a,b)``; terms joined by commas) against ``labels``."""
    for raw in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = raw.strip()
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (labels.get(key) in values) != (op == "in"):
                return False
        elif m := re.fullmatch(r"([\w./-]+)\s*(!=|==|=)\s*(\S*)", term):
            key, op, value = m.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term and term not in labels:
            return False
    return True


class ApiError(Exception):
    """An error answer: HTTP status, Hetzner error code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HcloudStandin:
    """The stand-in's state and HTTP server (threaded; loopback only).

    Attributes:
        token: the only bearer token accepted.
        servers, images, actions: objects by id, in the API's JSON shapes.
        requests: ``(method, path)`` of every request received, in order.
    """

    def __init__(self, token: str = "standin-token", server_types: list[dict] | None = None,
                 machines=None):
        self.token = token
        self.machines = machines
        self.server_types = server_types or [server_type_payload(*row) for row in _TYPES]
        self.servers: dict[int, dict] = {}
        self.images: dict[int, dict] = {1: self._image(1, "system", "ubuntu-22.04", {})}
        self.actions: dict[int, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1000)
        self._failures: list[int] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._hooks: queue.Queue = queue.Queue()
        self._hook_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> HcloudStandin:
        """Serve on a free loopback port in a daemon thread."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                standin._handle(self)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        """The API endpoint to hand to ``hcloud.Client(api_endpoint=...)``."""
        if self._httpd is None:
            raise RuntimeError("the hcloud stand-in is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def inject(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (429 or 5xx)."""
        with self._lock:
            self._failures.extend([status] * count)

    # -- seeding helpers (tests) ----------------------------------------------------------
    def add_server(self, name: str, labels: dict[str, str], server_type: str = "cx23",
                   status: str = "running", networks: tuple[int, ...] = ()) -> dict:
        """Create a server directly (as if made outside our code, or by a Pulumi provider in
        a workspace stand-in) and return it."""
        with self._lock:
            server = self._server(next(self._ids), name, self._type(server_type), labels,
                                  self.images[1], networks)
            server["status"] = status
            self.servers[server["id"]] = server
            return server

    def add_image(self, description: str, labels: dict[str, str] | None = None,
                  kind: str = "snapshot") -> dict:
        """Register an available image (e.g. the rehearsal's snapshot) and return it."""
        with self._lock:
            image = self._image(next(self._ids), kind, None, labels or {}, description)
            self.images[image["id"]] = image
            return image

    def _machine_hook(self, name: str, *args) -> None:
        """Queue ``machines.<name>(*args)``: a VM boots or halts on its own time, and the
        hooks run one at a time in the order of the API calls (poweroff before poweron)."""
        if self.machines is None:
            return
        with self._lock:
            if self._hook_thread is None:
                self._hook_thread = threading.Thread(target=self._run_hooks, daemon=True)
                self._hook_thread.start()
            self._hooks.put((getattr(self.machines, name), args))

    def _run_hooks(self) -> None:
        while True:
            hook, args = self._hooks.get()
            try:
                hook(*args)
            finally:
                self._hooks.task_done()

    def wait_for_machines(self) -> None:
        """Block until every queued machine hook has run."""
        if self._hook_thread is not None:
            self._hooks.join()

    # -- object shapes ----------------------------------------------------------------------
    def _type(self, ref) -> dict:
        for st in self.server_types:
            if str(ref) in (st["name"], str(st["id"])):
                return st
        raise ApiError(422, "invalid_input", f"server type {ref} not found")

    @staticmethod
    def _image(iid, kind, name, labels, description=None, status="available", server=None):
        return {"id": iid, "type": kind, "status": status, "name": name if kind == "system"
                else None, "description": description or name, "image_size": None,
                "disk_size": 10, "created": _NOW, "created_from": server, "bound_to": None,
                "os_flavor": "ubuntu", "os_version": "22.04", "rapid_deploy": kind == "system",
                "protection": {"delete": False}, "deprecated": None, "deleted": None,
                "labels": labels, "architecture": "x86"}

    def _server(self, sid, name, server_type, labels, image=None, networks=()):
        ip = f"203.0.113.{sid % 250 + 1}"
        return {
            "id": sid, "name": name, "status": "initializing", "created": _NOW,
            "public_net": {"ipv4": {"id": sid, "ip": ip, "blocked": False,
                                    "dns_ptr": f"static.{ip}.clients.your-server.de"},
                           "ipv6": None, "floating_ips": [], "firewalls": []},
            "private_net": [{"network": n, "ip": f"10.0.1.{sid % 250 + 1}", "alias_ips": [],
                             "mac_address": "86:00:00:00:00:01"} for n in networks],
            "server_type": server_type,
            "datacenter": {"id": 4, "name": "fsn1-dc14", "description": "Falkenstein 1 DC14",
                           "location": _FSN1, "server_types": {"supported": [], "available": [],
                                                               "available_for_migration": []}},
            "image": image, "iso": None, "rescue_enabled": False, "locked": False,
            "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0,
            "included_traffic": 21990232555520, "protection": {"delete": False, "rebuild": False},
            "labels": dict(labels), "volumes": [], "load_balancers": [],
            "primary_disk_size": server_type["disk"], "placement_group": None,
        }

    def _action(self, command: str, resource_id: int, kind: str = "server") -> dict:
        action: dict[str, Any] = {"id": next(self._ids), "command": command, "status": "running", "progress": 0,
                  "started": _NOW, "finished": None, "error": None,
                  "resources": [{"id": resource_id, "type": kind}]}
        self.actions[action["id"]] = action
        return action

    def _finish(self, action: dict) -> dict:
        if action["status"] == "running":
            action.update(status="success", progress=100, finished=_NOW)
            for res in action["resources"]:
                obj = (self.servers if res["type"] == "server" else self.images).get(res["id"])
                if obj is not None:
                    after = {"create_server": "running", "stop_server": "off",
                             "start_server": "running", "create_image": "available"}.get(action["command"])
                    obj["status"] = after or obj["status"]
        return action

    def _settle(self, resource_id: int) -> None:
        for action in list(self.actions.values()):
            if any(r["id"] == resource_id for r in action["resources"]):
                self._finish(action)

    # -- HTTP -------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length) or b"{}") if length else {}
        headers: dict[str, str] = {}
        with self._lock:
            self.requests.append((req.command, parts.path))
            try:
                if req.headers.get("Authorization") != f"Bearer {self.token}":
                    raise ApiError(401, "unauthorized", "unable to authenticate")
                if self._failures:
                    status = self._failures.pop(0)
                    if status == 429:
                        reset = int(dt.datetime.now(dt.UTC).timestamp()) + 1
                        headers = {"RateLimit-Limit": "3600", "RateLimit-Remaining": "0",
                                   "RateLimit-Reset": str(reset)}
                        raise ApiError(429, "rate_limit_exceeded", "limit of 3600 exceeded")
                    raise ApiError(status, "server_error", "error within the API")
                status, payload = self._route(req.command, parts.path, query, body)
            except ApiError as err:
                status = err.status
                payload = {"error": {"code": err.code, "message": err.message, "details": {}}}
        data = json.dumps(payload).encode() if payload is not None else b""
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, path: str, query: dict, body: dict):
        for (verb, pattern), handler in self._ROUTES.items():
            if verb == method and (m := re.fullmatch(pattern, path)):
                return handler(self, *(int(g) for g in m.groups()), query=query, body=body)
        raise ApiError(404, "not_found", f"no route {method} {path}")

    @staticmethod
    def _page(key: str, items: list[dict], query: dict):
        page, per_page = int(query.get("page", 1)), min(int(query.get("per_page", 25)), 50)
        last = max(1, -(-len(items) // per_page))
        meta = {"page": page, "per_page": per_page, "previous_page": page - 1 if page > 1
                else None, "next_page": page + 1 if page < last else None, "last_page": last,
                "total_entries": len(items)}
        chunk = items[(page - 1) * per_page: page * per_page]
        return 200, {key: chunk, "meta": {"pagination": meta}}

    @staticmethod
    def _filtered(items, query: dict, *fields: str) -> list[dict]:
        selector = query.get("label_selector", "")
        return [i for i in items if _matches(i["labels"], selector) and
                all(str(i.get(f)) == query[f] for f in fields if f in query)]

    def _get_or_404(self, store: dict, oid: int, what: str) -> dict:
        if oid not in store:
            raise ApiError(404, "not_found", f"{what} with ID {oid} not found")
        return store[oid]

    def list_servers(self, query, body):
        return self._page("servers", self._filtered(self.servers.values(), query, "name",
                                                    "status"), query)

    def get_server(self, sid, query, body):
        self._settle(sid)
        return 200, {"server": self._get_or_404(self.servers, sid, "server")}

    def create_server(self, query, body):
        name = body.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", name):
            raise ApiError(422, "invalid_input", "invalid input in field 'name'")
        if any(s["name"] == name for s in self.servers.values()):
            raise ApiError(409, "uniqueness_error", "server name is already used")
        server_type = self._type(body.get("server_type"))
        if server_type["deprecation"]:
            raise ApiError(422, "invalid_input", f"server type {server_type['name']} is "
                                                 "deprecated and unavailable")
        image = next((i for i in self.images.values() if str(body.get("image")) in
                      (str(i["id"]), i["name"])), None)
        if image is None:
            raise ApiError(422, "invalid_input", f"image {body.get('image')} not found")
        server = self._server(next(self._ids), name, server_type, body.get("labels") or {},
                              image, body.get("networks") or ())
        self.servers[server["id"]] = server
        action = self._action("create_server", server["id"])
        self._machine_hook("boot", json.loads(json.dumps(server)), body.get("user_data"))
        return 201, {"server": server, "action": action, "next_actions": [],
                     "root_password": None}

    def delete_server(self, sid, query, body):
        self._get_or_404(self.servers, sid, "server")
        del self.servers[sid]
        self._machine_hook("delete", sid)
        return 200, {"action": self._action("delete_server", sid)}

    def update_server(self, sid, query, body):
        """``PUT /servers/{id}``: change ``name`` and/or ``labels``."""
        server = self._get_or_404(self.servers, sid, "server")
        if "labels" in body:
            server["labels"] = dict(body["labels"] or {})
        if body.get("name"):
            server["name"] = body["name"]
        return 200, {"server": server}

    def power_off(self, sid, query, body):
        self._get_or_404(self.servers, sid, "server")["status"] = "stopping"
        self._machine_hook("power_off", sid)
        return 201, {"action": self._action("stop_server", sid)}

    def reboot(self, sid, query, body):
        """``POST /servers/{id}/actions/reboot``: an ACPI reboot; the VM halts and boots again
        while the API keeps saying ``running``."""
        self._get_or_404(self.servers, sid, "server")
        self._machine_hook("power_off", sid)
        self._machine_hook("power_on", sid)
        return 201, {"action": self._action("reboot_server", sid)}

    def power_on(self, sid, query, body):
        self._get_or_404(self.servers, sid, "server")["status"] = "starting"
        self._machine_hook("power_on", sid)
        return 201, {"action": self._action("start_server", sid)}

    def change_type(self, sid, query, body):
        """``POST /servers/{id}/actions/change_type``: Hetzner requires the server to be off."""
        server = self._get_or_404(self.servers, sid, "server")
        if server["status"] != "off":
            raise ApiError(409, "server_not_stopped", "server must be stopped to change type")
        server_type = self._type(body.get("server_type"))
        if server_type["deprecation"]:
            raise ApiError(422, "invalid_input", f"server type {server_type['name']} is "
                                                 "deprecated and unavailable")
        server["server_type"] = server_type
        if body.get("upgrade_disk"):
            server["primary_disk_size"] = server_type["disk"]
        return 201, {"action": self._action("change_server_type", sid)}

    def create_image(self, sid, query, body):
        server = self._get_or_404(self.servers, sid, "server")
        iid = next(self._ids)
        image = self._image(iid, body.get("type") or "snapshot", None, body.get("labels") or {},
                            body.get("description"), "creating",
                            {"id": sid, "name": server["name"]})
        self.images[iid] = image
        action = self._action("create_image", sid)
        action["resources"].append({"id": iid, "type": "image"})
        return 201, {"image": image, "action": action}

    def list_server_types(self, query, body):
        return self._page("server_types", [t for t in self.server_types if
                                           query.get("name", t["name"]) == t["name"]], query)

    def get_server_type(self, tid, query, body):
        return 200, {"server_type": self._type(tid)}

    def get_action(self, aid, query, body):
        return 200, {"action": self._finish(self._get_or_404(self.actions, aid, "action"))}

    def list_images(self, query, body):
        images = self._filtered(self.images.values(), query, "type", "name", "status")
        return self._page("images", images, query)

    def get_image(self, iid, query, body):
        self._settle(iid)
        return 200, {"image": self._get_or_404(self.images, iid, "image")}

    _ROUTES: ClassVar[dict] = {
        ("GET", r"/v1/servers"): list_servers,
        ("POST", r"/v1/servers"): create_server,
        ("GET", r"/v1/servers/(\d+)"): get_server,
        ("DELETE", r"/v1/servers/(\d+)"): delete_server,
        ("PUT", r"/v1/servers/(\d+)"): update_server,
        ("POST", r"/v1/servers/(\d+)/actions/poweroff"): power_off,
        ("POST", r"/v1/servers/(\d+)/actions/poweron"): power_on,
        ("POST", r"/v1/servers/(\d+)/actions/reboot"): reboot,
        ("POST", r"/v1/servers/(\d+)/actions/change_type"): change_type,
        ("POST", r"/v1/servers/(\d+)/actions/create_image"): create_image,
        ("GET", r"/v1/server_types"): list_server_types,
        ("GET", r"/v1/server_types/(\d+)"): get_server_type,
        ("GET", r"/v1/actions/(\d+)"): get_action,
        ("GET", r"/v1/images"): list_images,
        ("GET", r"/v1/images/(\d+)"): get_image,
    }
