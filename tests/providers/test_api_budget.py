"""The hcloud API budget (issue 22): a token bucket shared through Redis by every worker."""

from __future__ import annotations

import time

import pytest
from support.redis_server import RedisServer

from control.errors import ProvisioningError
from control.providers.hetzner.api_budget import ApiBudget
from wire.redis_bus import connect


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def redis_client(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    client = connect(server.admin_url)
    yield client
    client.close()
    server.stop()


def test_two_workers_share_one_bucket_and_the_second_waits_for_its_refill(redis_client):
    first = ApiBudget(10, 100.0, redis=redis_client, key="hermes:test:hcloud")
    second = ApiBudget(10, 100.0, redis=redis_client, key="hermes:test:hcloud")
    assert first.take(8) == 0.0  # 2 requests left for the whole project
    began = time.monotonic()
    waited = second.take(6)
    # The second worker waited for 4 requests' refill at 100/s (Redis' clock), not longer.
    assert 0.02 <= waited <= time.monotonic() - began < 0.5


def test_a_cost_that_cannot_fit_in_time_is_a_transient_failure():
    budget = ApiBudget(5, 1.0, sleep=Sleeps())
    budget.take(5)
    with pytest.raises(ProvisioningError) as failure:
        budget.take(5, timeout=2.0)
    assert failure.value.code == "provisioning_transient"
