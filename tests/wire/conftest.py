"""Fixtures for the bus tests: private ``redis-server`` processes (``support.redis_server``)."""

from __future__ import annotations

import signal

import pytest
import redis
from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server shared by the tests of this directory."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server_factory(tmp_path):
    """Return ``make(**options) -> RedisServer`` (started); every server is stopped at teardown."""
    servers: list[RedisServer] = []

    def make(**options) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture
def admin(redis_server):
    """Admin client of the shared private server, emptied of keys and tenant users."""
    client = redis.Redis.from_url(redis_server.admin_url, decode_responses=True)
    client.flushall()
    for user in client.acl_users():
        if user != "default":
            client.acl_deluser(user)
    yield client
    client.close()
