"""A small Discord Gateway client for direct messages (``hermes discord gateway``).

discord.py takes its gateway address from ``GET /gateway/bot`` and hard-codes its REST base in
``discord.http.Route.BASE``, so it can be pointed at a local stand-in only by patching a class
attribute, and its reconnect logic cannot be observed from outside; this client speaks the
Gateway protocol itself over ``websockets`` (https://discord.com/developers/docs/events/gateway):

* connect (``?v=10&encoding=json``), receive HELLO (op 10) with ``heartbeat_interval``;
* heartbeat (op 1 with the last sequence number) every interval, the first after ``interval *
  jitter``; a heartbeat not acknowledged (op 11) before the next is due means a zombie
  connection: close and resume; a server heartbeat request (op 1) is answered at once;
* IDENTIFY (op 2) with the token and intents DIRECT_MESSAGES | MESSAGE_CONTENT on a new
  session; READY gives ``session_id`` and ``resume_gateway_url``;
* on a lost connection, a RECONNECT (op 7) or a resumable close code: connect to
  ``resume_gateway_url`` and RESUME (op 6) with the session id and last sequence; Discord
  replays the missed dispatches;
* INVALID SESSION (op 9): ``d: true`` resume, ``d: false`` wait 1-5 s and IDENTIFY afresh;
* close codes 4004 (authentication), 4010-4014 (shard/intents) are fatal: the client stops.

Every dispatch is handed to ``on_dispatch(type, data)`` in order, in a worker thread (it
touches the database) and before the next payload is read; ``on_state(connected)`` reports the
session state for the channel watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable

log = logging.getLogger(__name__)

# Intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
RECONNECT_DELAY = 1.0  # seconds before connecting again after a failed attempt (doubles, max 30).


class GatewayFatal(Exception):
    """The Gateway closed with a code that reconnecting cannot fix (bad token, bad intents)."""


class GatewayClient:
    """Holds one Gateway session and resumes it across connection losses.

    Args:
        url: the Gateway URL (``DISCORD_GATEWAY_URL``, or ``GET /gateway/bot``'s ``url``).
        token: the bot token.
        on_dispatch: ``(event type, data)`` for every dispatch (op 0), READY and RESUMED included.
        on_state: ``(connected: bool)`` when a session becomes usable or is lost, and again
            on every heartbeat acknowledgement (the watchdog's "still alive").
        intents: the Gateway intents bitfield.

    Attributes:
        session_id, seq, resume_url: the resumable session's state.
        identifies, resumes: how many of each this client sent.
    """

    def __init__(self, url: str, token: str, on_dispatch: Callable[[str, dict], None],
                 on_state: Callable[[bool], None] = lambda connected: None,
                 intents: int = DIRECT_MESSAGES | MESSAGE_CONTENT):
        self.url = url
        self.token = token
        self.on_dispatch = on_dispatch
        self.on_state = on_state
        self.intents = intents
        self.session_id: str | None = None
        self.seq: int | None = None
        self.resume_url: str | None = None
        self.identifies = self.resumes = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect and stay connected until ``stopping`` is set.

        Raises:
            GatewayFatal: the Gateway refused the token or the intents.
        """
        from websockets.exceptions import WebSocketException

        delay = RECONNECT_DELAY
        while not stopping.is_set():
            try:
                await self._connection(stopping)
                delay = RECONNECT_DELAY
            except GatewayFatal:
                self.on_state(False)
                raise
            except (TimeoutError, OSError, WebSocketException, _ConnectionLost) as exc:
                log.warning("gateway connection lost (%s); resuming", exc)
                self.on_state(False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)
        self.on_state(False)

    async def _connection(self, stopping: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        base = self.resume_url if self.session_id and self.resume_url else self.url
        url = f"{base.rstrip('/')}/?v=10&encoding=json"
        try:
            async with connect(url, open_timeout=10, max_size=2**23) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                if hello.get("op") != 10:
                    raise _ConnectionLost(f"expected HELLO, got op {hello.get('op')}")
                interval = hello["d"]["heartbeat_interval"] / 1000.0
                await self._open_session(ws)
                acked = asyncio.Event()
                acked.set()
                beat = asyncio.create_task(self._heartbeat(ws, interval, acked))
                stop = asyncio.create_task(stopping.wait())
                try:
                    await self._read(ws, acked, stop)
                finally:
                    beat.cancel()
                    stop.cancel()
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
            if code in FATAL_CLOSE_CODES:
                raise GatewayFatal(f"gateway closed with {code}: {reason}") from exc
            raise _ConnectionLost(f"closed ({code})") from exc

    async def _open_session(self, ws) -> None:
        if self.session_id is not None:
            self.resumes += 1
            await ws.send(json.dumps({"op": 6, "d": {"token": self.token, "session_id": self.session_id,
                                                     "seq": self.seq}}))
        else:
            self.identifies += 1
            await ws.send(json.dumps({"op": 2, "d": {
                "token": self.token, "intents": self.intents,
                "properties": {"os": "linux", "browser": "hermes", "device": "hermes"}}}))

    async def _heartbeat(self, ws, interval: float, acked: asyncio.Event) -> None:
        await asyncio.sleep(interval * random.random())
        while True:
            if not acked.is_set():
                log.warning("gateway heartbeat not acknowledged; reconnecting")
                await ws.close(4000, "zombie connection")
                return
            acked.clear()
            await ws.send(json.dumps({"op": 1, "d": self.seq}))
            await asyncio.sleep(interval)

    async def _read(self, ws, acked: asyncio.Event, stop: asyncio.Task) -> None:
        while True:
            receive = asyncio.create_task(ws.recv())
            done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                receive.cancel()
                await ws.close(1000, "shutting down")
                self.session_id = None  # a 1000 close ends the session (docs: "Disconnecting")
                return
            payload = json.loads(receive.result())
            op = payload.get("op")
            if op == 0:
                await self._on_dispatch(payload)
            elif op == 1:
                await ws.send(json.dumps({"op": 1, "d": self.seq}))
            elif op == 11:
                acked.set()
                self.on_state(True)
            elif op == 7:
                await ws.close(4000, "reconnect requested")
                raise _ConnectionLost("RECONNECT")
            elif op == 9:
                if not payload.get("d"):
                    self.session_id, self.seq, self.resume_url = None, None, None
                    await asyncio.sleep(1 + 4 * random.random())
                await ws.close(4000, "invalid session")
                raise _ConnectionLost("INVALID SESSION")

    async def _on_dispatch(self, payload: dict) -> None:
        kind, data = payload.get("t"), payload.get("d") or {}
        if payload.get("s") is not None:
            self.seq = payload["s"]
        if kind == "READY":
            self.session_id = data.get("session_id")
            self.resume_url = data.get("resume_gateway_url") or self.url
        if kind in ("READY", "RESUMED"):
            self.on_state(True)
        await asyncio.to_thread(self.on_dispatch, str(kind or ""), data)


class _ConnectionLost(Exception):
    """The connection ended in a way a RESUME (or a new IDENTIFY) can recover."""
