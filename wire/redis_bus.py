"""``RedisBus``: the production implementation of the bus contract on Redis 7 Streams.

Each bus stream is a Redis stream whose entries hold one field, ``payload`` (the JSON text).
Command semantics follow the Redis documentation (https://redis.io/docs/data-types/streams/):

* ``append`` runs ``APPEND_SCRIPT`` (one Lua script, so atomic): it returns the earlier id
  when the idempotency key ``{stream}:idem:{key}`` exists, refuses the entry while a consumer
  group has ``max_backlog`` entries or more unacknowledged (backpressure, see below), else
  ``XADD {stream} MAXLEN ~ retention * payload ...`` and ``SET {stream}:idem:{key} id EX ttl``.
  When Redis is out of memory (``maxmemory`` with ``noeviction``, roles/redis) the ``XADD``
  is refused with ``OOM``; ``append`` then runs ``TRIM_ACKED_SCRIPT`` (``XTRIM MINID`` below
  the oldest entry some group still needs: its oldest pending entry, else the entry after its
  last delivered one; never with no group) and tries once more only when that freed entries,
  else raises ``BusBackpressure``.  ``XTRIM`` is not a ``denyoom`` command, so it runs while
  Redis refuses writes; ``XADD`` and the idempotency ``SET`` stay one atomic step because a
  script is refused only at its first write.
  Idempotency keys live under the stream's own key prefix so a tenant's ACL covers them.
* ``read`` creates the group on first use (``XGROUP CREATE ... 0 MKSTREAM``, BUSYGROUP is
  fine), claims entries idle longer than the visibility timeout (``XAUTOCLAIM``; attempts
  come from the delivery counter that ``XPENDING`` reports), then takes new entries
  (``XREADGROUP ... STREAMS s1 s2 > >``, blocking at most ``block`` seconds).
* ``ack`` is ``XACK``; ``dead_letter`` is ``XADD {stream}:dead`` + ``XACK`` in one
  ``MULTI``; ``pending_count`` is the ``XPENDING`` summary; ``length`` is ``XLEN``.

A consumer must ``ack`` only after it has durably taken the message (e.g. its task is
committed to the agent's Huey queue); an entry never acked is handed out again after
``visibility_timeout`` seconds.  An entry without a ``payload`` field is moved to the
dead-letter stream with a log line and never reaches the consumer.

Bounded memory and backpressure: ``MAXLEN ~ retention`` keeps each stream near ``retention``
entries (Redis trims whole radix-tree nodes, so up to ``stream-node-max-entries``, 100 by
default, more).  Trimming must never remove an entry a group has not yet read, so ``append``
raises ``BusBackpressure`` (a ``BusUnavailable``: the webhook answers 503 and the platform
retries) while some group has ``max_backlog`` or more entries not yet acknowledged
(``XINFO GROUPS`` lag + pending; a stream with no group counts all its entries; Redis
reports no lag only after ``XDEL``, which this bus never issues, and then counts 0).

Failures: connection refused/reset is retried 3 times with backoff (0.1 + 0.2 + 0.2 s),
then raises ``BusUnavailable``; so does a socket timeout (``socket_timeout``, 5 s by default;
not retried, since re-sending an append could duplicate it).  Rejected credentials and ACL
denials raise ``BusAuthError``.  Nothing is reported as appended unless Redis confirmed it;
an append that timed out may still have happened, so retries pass an idempotency key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import time
from contextlib import contextmanager
from typing import Any

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from wire.bus import Bus, Delivery
from wire.errors import BusAuthError, BusBackpressure, BusTLSError, BusUnavailable, WireError

log = structlog.get_logger(__name__)

IDEMPOTENCY_TTL = 7 * 24 * 3600  # seconds; longer than any platform's webhook retry window
SOCKET_TIMEOUT = 5.0  # seconds per reply; a blocking read waits in chunks shorter than this
CONNECT_TIMEOUT = 2.0  # seconds
# Error replies of a server refusing commands for now (https://redis.io/docs/reference/).
_UNAVAILABLE_CODES = {"OOM", "MISCONF", "READONLY", "LOADING", "MASTERDOWN", "BUSY"}
# redis-py prefixes errors from a pipeline with "Command # n (...) of pipeline caused error: ".
_ERROR_CODE = re.compile(r"(?:^|caused error: )([A-Z]+)\b")

APPEND_SCRIPT = """
local stream, idem_key = KEYS[1], KEYS[2]
local payload, retention, max_backlog, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if idem_key then
  local earlier = redis.call('GET', idem_key)
  if earlier then return {'duplicate', earlier} end
end
local backlog = redis.call('XLEN', stream)
if backlog > 0 then
  local groups = redis.call('XINFO', 'GROUPS', stream)
  if #groups > 0 then backlog = 0 end
  for _, group in ipairs(groups) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    local waiting = info['pending'] + (info['lag'] or 0)
    if waiting > backlog then backlog = waiting end
  end
end
if backlog >= max_backlog then return {'full', tostring(backlog)} end
local id = redis.pcall('XADD', stream, 'MAXLEN', '~', retention, '*', 'payload', payload)
if type(id) == 'table' and id.err then
  if string.sub(id.err, 1, 4) == 'OOM ' then return {'oom', id.err} end
  return id
end
if idem_key then redis.call('SET', idem_key, id, 'EX', ttl) end
return {'appended', id}
"""
_APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()

# Trim the entries every consumer group of KEYS[1] has acknowledged. Returns {removed, ''},
# or {0, error} when the ACL user may not run XPENDING or XTRIM on the stream.
TRIM_ACKED_SCRIPT = """
local stream = KEYS[1]
if redis.call('XLEN', stream) == 0 then return {0, ''} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then return {0, ''} end
local floor = nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local needed
  if info['pending'] > 0 then
    local summary = redis.pcall('XPENDING', stream, info['name'])
    if summary.err then return {0, summary.err} end
    needed = summary[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    needed = string.format('%d-%d', ms, seq + 1)
  end
  if floor == nil or before(needed, floor) then floor = needed end
end
local removed = redis.pcall('XTRIM', stream, 'MINID', floor)
if type(removed) == 'table' then return {0, removed.err} end
return {removed, ''}
"""


def tls_options(url: str, ca_file: str = "") -> dict:
    """Return the redis-py TLS keyword arguments for ``url``: none for ``redis://``.

    A ``rediss://`` server must present a certificate that chains to ``ca_file`` (PEM; the
    private CA ``roles/redis`` issues) or, with no ``ca_file``, to the system's CAs, and that
    names the host of the URL (``ssl_check_hostname``; the role puts the private address and
    host name in its SANs).

    Raises:
        BusTLSError: ``ca_file`` is set but is not a readable file.
    """
    if not url.startswith("rediss://"):
        if ca_file:
            log.warning("bus.ca_file_unused", hint="the bus URL is not rediss://; no TLS")
        return {}
    options = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca_file:
        if not os.access(ca_file, os.R_OK) or not os.path.isfile(ca_file):
            raise BusTLSError(f"bus CA file {ca_file!r} (HERMES_BUS_CA_FILE) is not a readable "
                              f"file")
        options["ssl_ca_certs"] = ca_file
    return options


def connect(url: str, *, ca_file: str = "", socket_timeout: float = SOCKET_TIMEOUT,
            connect_timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """Return a redis-py client for ``url`` after a successful ``PING``.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS).
        ca_file: PEM CA file that verifies a ``rediss://`` server (see ``tls_options``);
            ``""``: the system's CAs.
        socket_timeout: seconds to wait for any reply.
        connect_timeout: seconds to wait for the TCP (and TLS) connection.

    Raises:
        BusAuthError: Redis rejected the user or password (message names user and server).
        BusTLSError: the server's certificate failed verification, or ``ca_file`` is unusable.
        BusUnavailable: Redis cannot be reached.
    """
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        # Only connection errors: re-sending after a timeout could append twice.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 3,
                    supported_errors=(redis.ConnectionError,)),
        **tls_options(url, ca_file),
    )
    with translate_errors(client, "connect"):
        client.ping()
    return client


def reply_code(exc: Exception) -> str:
    """Return the error code of a Redis error reply (``NOGROUP``, ``BUSYGROUP``, ``ERR``, ...)."""
    match = _ERROR_CODE.search(str(exc))
    return match.group(1) if match else ""


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    user = kwargs.get("username") or "default"
    return f"user {user!r} at {kwargs.get('host')}:{kwargs.get('port')}"


@contextmanager
def translate_errors(client: redis.Redis, action: str):
    """Re-raise redis-py errors raised inside the block as the wire error hierarchy.

    Raises:
        BusAuthError: wrong password, revoked user, or an ACL denial (NOPERM).
        BusBackpressure: Redis is out of memory (``OOM command not allowed``): retry later.
        BusTLSError: the server's TLS certificate failed verification.
        BusUnavailable: connection refused/lost, timeout, or Redis refusing writes for now.
        WireError: any other error reply.
    """
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise _out_of_memory(client, action, f"OOM {exc}") from exc
    except redis.AuthenticationError as exc:
        raise BusAuthError(
            f"Redis rejected {_describe(client)} during {action}: wrong password, or the user "
            f"was revoked or disabled (rotate it with `hermes bus grant TENANT`): {exc}"
        ) from exc
    except redis.exceptions.NoPermissionError as exc:
        raise BusAuthError(f"Redis ACL denies {_describe(client)} to {action}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc.__context__, ssl.SSLCertVerificationError) or \
                "certificate verify failed" in str(exc):
            raise BusTLSError(f"Redis TLS certificate of {_describe(client)} failed "
                              f"verification during {action} (is HERMES_BUS_CA_FILE the CA "
                              f"that roles/redis issued?): {exc}") from exc
        raise BusUnavailable(f"Redis unavailable for {_describe(client)} during {action}: "
                             f"{exc}") from exc
    except redis.ResponseError as exc:
        code = reply_code(exc)
        if code == "OOM":
            raise _out_of_memory(client, action, str(exc)) from exc
        unavailable = code in _UNAVAILABLE_CODES or isinstance(exc, redis.exceptions.ReadOnlyError)
        error = BusUnavailable if unavailable else WireError
        raise error(f"Redis refused {action} for {_describe(client)}: {exc}") from exc


def _out_of_memory(client: redis.Redis, action: str, reply: str) -> BusBackpressure:
    return BusBackpressure(
        f"Redis is full and refused {action} for {_describe(client)} ({reply}); nothing was "
        f"written, retry later (runbooks/redis-down.md, 'Redis is full')")


class RedisBus(Bus):
    """Bus on a Redis 7 server (see the module docstring for the command mapping).

    Args:
        client: a redis-py client made with ``decode_responses=True`` (``connect`` makes one).
        visibility_timeout: seconds an entry may stay pending before it is handed out again.
        retention: entries kept per stream (``XADD MAXLEN ~``).
        max_backlog: entries a group may have unacknowledged before ``append`` raises
            ``BusBackpressure``; default 90 % of ``retention`` so trimming never removes an
            entry not yet read.
        idempotency_ttl: seconds an idempotency key is remembered.

    Raises:
        BusAuthError, BusUnavailable: the start-up ``PING`` failed.
    """

    def __init__(self, client: redis.Redis, visibility_timeout: float = 30.0,
                 retention: int = 100_000, max_backlog: int | None = None,
                 idempotency_ttl: int = IDEMPOTENCY_TTL):
        self._client = client
        self.visibility_timeout = visibility_timeout
        self.retention = retention
        self.max_backlog = max_backlog if max_backlog is not None else retention * 9 // 10
        self.idempotency_ttl = idempotency_ttl
        self._socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._groups: set[tuple[str, str]] = set()
        self._cursors: dict[tuple[str, str], str] = {}
        self.ping()

    @classmethod
    def from_url(cls, url: str, visibility_timeout: float = 30.0, retention: int = 100_000,
                 *, ca_file: str = "", socket_timeout: float = SOCKET_TIMEOUT,
                 **options) -> RedisBus:
        """Connect to ``url`` (see ``connect``; ``ca_file`` verifies a ``rediss://`` server)
        and return a bus; ``options`` go to ``__init__``.

        Raises:
            BusAuthError: wrong password or revoked user, with a message naming the user.
            BusTLSError: the server's certificate failed verification against ``ca_file``.
            BusUnavailable: Redis cannot be reached.
        """
        client = connect(url, ca_file=ca_file, socket_timeout=socket_timeout)
        return cls(client, visibility_timeout=visibility_timeout, retention=retention, **options)

    def _errors(self, action: str):
        return translate_errors(self._client, action)

    # -- append ------------------------------------------------------------------------------

    def _script_args(self, stream: str, payload: str, key: str | None) -> list:
        keys = [stream] if key is None else [stream, f"{stream}:idem:{key}"]
        return [len(keys), *keys, payload, self.retention, self.max_backlog, self.idempotency_ttl]

    def _run_append(self, stream: str, payload: str, key: str | None) -> list:
        args = self._script_args(stream, payload, key)
        try:
            return self._client.evalsha(_APPEND_SHA, *args)
        except redis.exceptions.NoScriptError:
            return self._client.eval(APPEND_SCRIPT, *args)  # EVAL also caches the script

    def _trim_acked(self, stream: str) -> int:
        """Run ``TRIM_ACKED_SCRIPT``; return the entries removed (0 when the ACL denies it)."""
        removed, error = self._client.eval(TRIM_ACKED_SCRIPT, 1, stream)
        if error:
            log.warning("bus.trim_denied", stream=stream, error=error,
                        hint="the ACL user needs XPENDING and XTRIM on this stream")
        else:
            log.warning("bus.out_of_memory_trimmed_acked", stream=stream, removed=removed)
        return int(removed)

    def _entry_id(self, stream: str, reply: list) -> str:
        status, value = reply
        if status == "full":
            raise BusBackpressure(
                f"{stream}: a consumer group has {value} entries not yet acknowledged (limit "
                f"{self.max_backlog}); entry refused, retry later"
            )
        if status == "oom":
            raise _out_of_memory(self._client, f"append to {stream}", value)
        return value

    def append(self, stream, payload, idempotency_key=None):
        """See ``Bus.append``; also raises ``BusBackpressure`` (backlog limit, or Redis out of
        memory even after trimming acknowledged entries) and ``BusAuthError`` (ACL denial)."""
        with self._errors(f"append to {stream}"):
            reply = self._run_append(stream, payload, idempotency_key)
            if reply[0] == "oom" and self._trim_acked(stream):
                reply = self._run_append(stream, payload, idempotency_key)
            return self._entry_id(stream, reply)

    def append_many(self, stream, payloads, idempotency_keys=None):
        """See ``Bus.append_many``: one pipelined round trip; each entry is checked separately."""
        keys = idempotency_keys if idempotency_keys is not None else [None] * len(payloads)
        with self._errors(f"append to {stream}"):
            pipe = self._client.pipeline(transaction=False)
            for payload, key in zip(payloads, keys, strict=True):
                pipe.evalsha(_APPEND_SHA, *self._script_args(stream, payload, key))
            replies = pipe.execute(raise_on_error=False)
            ids = []
            for payload, key, piped in zip(payloads, keys, replies, strict=True):
                reply = piped
                if isinstance(piped, redis.exceptions.NoScriptError):
                    reply = self._run_append(stream, payload, key)  # the script did not run
                elif isinstance(piped, Exception):
                    raise piped
                if reply[0] == "oom":
                    self._trim_acked(stream)  # so that the caller's retry can succeed
                ids.append(self._entry_id(stream, reply))
            return ids

    # -- read --------------------------------------------------------------------------------

    def read(self, streams, group, consumer, count=10, block=0.0):
        """See ``Bus.read``; ``count`` bounds each stream (``XREADGROUP COUNT``)."""
        streams = list(streams)
        deadline = time.monotonic() + block
        # Longest single XREADGROUP BLOCK: the reply must arrive before the socket timeout, and
        # a blocked reader must look for expired entries again within half a visibility timeout.
        chunk = max(0.05, min(self._socket_timeout or 120.0, self.visibility_timeout) / 2)
        with self._errors(f"read {streams} as group {group!r}"):
            while True:
                wait = min(chunk, deadline - time.monotonic())
                deliveries = self._read_once(streams, group, consumer, count, wait)
                if deliveries or time.monotonic() >= deadline:
                    return deliveries

    def _read_once(self, streams, group, consumer, count, wait) -> list[Delivery]:
        try:
            return self._take(streams, group, consumer, count, wait)
        except redis.ResponseError as exc:
            if reply_code(exc) != "NOGROUP":
                raise
            # The stream or group vanished (deleted, or a restart without persistence).
            self._groups.difference_update((stream, group) for stream in streams)
            return self._take(streams, group, consumer, count, wait)

    def _take(self, streams, group, consumer, count, wait) -> list[Delivery]:
        self._ensure_groups(streams, group)
        taken = self._claim_expired(streams, group, consumer, count)
        if len(taken) < count:
            block_ms = int(wait * 1000) if wait > 0 and not taken else None
            reply = self._client.xreadgroup(group, consumer, dict.fromkeys(streams, ">"),
                                            count=count - len(taken), block=block_ms or None)
            # RESP3 answers a dict, RESP2 a list of [stream, entries] (redis-py's XREADGROUP).
            items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
            taken += [(stream, entry_id, fields, 1)
                      for stream, entries in items for entry_id, fields in entries]
        return self._deliveries(taken, group)

    def _ensure_groups(self, streams: list[str], group: str) -> None:
        missing = [s for s in streams if (s, group) not in self._groups]
        if not missing:
            return
        pipe = self._client.pipeline(transaction=False)
        for stream in missing:
            pipe.xgroup_create(stream, group, id="0", mkstream=True)
        for stream, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception) and reply_code(reply) != "BUSYGROUP":
                raise reply
            self._groups.add((stream, group))

    def _claim_expired(self, streams, group, consumer, count) -> list[tuple[str, str, Any, int]]:
        idle_ms = int(self.visibility_timeout * 1000)
        pipe = self._client.pipeline(transaction=False)
        for stream in streams:
            pipe.xautoclaim(stream, group, consumer, idle_ms,
                            start_id=self._cursors.get((stream, group), "0-0"), count=count)
        claimed: list[tuple[str, str, Any]] = []  # fields: a dict, or None for a deleted entry
        for stream, reply in zip(streams, pipe.execute(), strict=True):
            cursor, entries, *rest = reply
            self._cursors[(stream, group)] = cursor
            if rest and rest[0]:
                log.warning("bus.pending_entries_trimmed", stream=stream, group=group,
                            entry_ids=rest[0], hint="entries pending longer than retention allows")
            claimed += [(stream, entry_id, fields) for entry_id, fields in entries]
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for stream, entry_id, _ in claimed:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        attempts = [rows[0]["times_delivered"] if rows else 2 for rows in pipe.execute()]
        return [(*entry, n) for entry, n in zip(claimed, attempts, strict=True)]

    def _deliveries(self, taken: list[tuple], group: str) -> list[Delivery]:
        out = []
        for stream, entry_id, fields, attempts in taken:
            payload = fields.get("payload") if isinstance(fields, dict) else None
            if payload is None:
                log.warning("bus.malformed_entry_dead_lettered", stream=stream, group=group,
                            entry_id=entry_id, fields=fields)
                bad = Delivery(stream, entry_id, json.dumps(fields), attempts)
                self.dead_letter(bad, group, "malformed entry: no payload field")
                continue
            out.append(Delivery(stream, entry_id, payload, attempts))
        return out

    # -- acknowledgement and inspection ------------------------------------------------------

    def ack(self, stream, group, entry_id):
        """See ``Bus.ack`` (``XACK``); acknowledging twice is harmless."""
        with self._errors(f"ack on {stream}"):
            self._client.xack(stream, group, entry_id)

    def ack_many(self, stream, group, entry_ids):
        """See ``Bus.ack_many``: one ``XACK`` with every id."""
        if entry_ids:
            with self._errors(f"ack on {stream}"):
                self._client.xack(stream, group, *entry_ids)

    def dead_letter(self, delivery, group, reason):
        """See ``Bus.dead_letter``: ``XADD {stream}:dead`` and ``XACK`` in one ``MULTI``.

        The dead entry's payload is JSON ``{"entry_id", "group", "reason", "payload",
        "attempts"}``, as in ``SqliteBus``.
        """
        record = {"entry_id": delivery.entry_id, "group": group, "reason": reason,
                  "payload": delivery.payload, "attempts": delivery.attempts}
        with self._errors(f"dead-letter from {delivery.stream}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xadd(f"{delivery.stream}:dead", {"payload": json.dumps(record)},
                      maxlen=self.retention, approximate=True)
            pipe.xack(delivery.stream, group, delivery.entry_id)
            pipe.execute()

    def pending_count(self, stream, group):
        """See ``Bus.pending_count`` (``XPENDING`` summary); 0 when the group does not exist."""
        with self._errors(f"count pending on {stream}"):
            try:
                return int(self._client.xpending(stream, group)["pending"])
            except redis.ResponseError as exc:
                if reply_code(exc) == "NOGROUP" or "no such key" in str(exc):
                    return 0
                raise

    def length(self, stream):
        """See ``Bus.length`` (``XLEN``)."""
        with self._errors(f"measure {stream}"):
            return int(self._client.xlen(stream))

    def ping(self):
        """See ``Bus.ping``; raises ``BusAuthError`` when the credentials are rejected."""
        with self._errors("ping"):
            self._client.ping()

    def close(self):
        """Close the client's connections."""
        self._client.close()
