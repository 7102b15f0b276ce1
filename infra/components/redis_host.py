"""The Redis host: the bus (Redis 7 Streams, one ACL user per tenant) on the private network.

Seed facts the ``redis`` Ansible role configures on it: Redis 7 with AOF + RDB persistence, TLS
only (6380, plaintext port closed), ``maxmemory 3gb`` with ``noeviction`` (a full Redis refuses
writes rather than dropping unacknowledged stream entries); hence the default ``cx33`` (8 GB RAM) leaves
room for the fork during RDB snapshots and AOF rewrites (Redis docs, "Persistence").
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.components.host import HostArgs, SharedHost


@dataclass
class RedisHostArgs(HostArgs):
    """Args of ``RedisHost``: ``HostArgs`` plus the TLS port clients use.

    Attributes:
        tls_port: Redis TLS port (6380; the plaintext port is closed, ``port 0``).
    """

    tls_port: int = 6380


class RedisHost(SharedHost):
    """The shared Redis server; no public IPv4 unless ``public_ipv4`` is set.

    Attributes:
        url: ``rediss://<private ip>:<tls port>`` without credentials (each tenant's bus URL adds
            its own ACL user).
    """

    ROLE = "redis"
    TYPE = "hermes:infra:RedisHost"

    def _role_outputs(self, args: HostArgs) -> dict[str, pulumi.Output]:
        if not isinstance(args, RedisHostArgs):
            raise TypeError(f"RedisHost takes RedisHostArgs, not {type(args).__name__}")
        self.tls_port = args.tls_port
        self.url = pulumi.Output.concat("rediss://", self.private_ip, f":{args.tls_port}")
        return {"url": self.url}
