"""Test-wide isolation (Hermes Agent's habit): a private HOME, no credentials, UTC, offline models."""

from __future__ import annotations

import stat

import pytest
import support.fuzz  # noqa: F401 - loads the Hypothesis profile (ci or dev) for every test

from agent.config import AgentConfig
from control.settings import Settings
from wire import embedder_export
from wire.declared import env_names

# Every variable the product reads, from the declarations themselves (``Settings`` and
# ``AgentConfig``, ``wire.declared``), plus the test harness's own database and Redis URLs:
# a developer's shell (keys, endpoints, a data dir) must not leak into a test.
DECLARED_VARS = tuple(sorted({name for declared in (Settings, AgentConfig)
                              for names in env_names(declared).values() for name in names}
                             | {"DATABASE_URL", "REDIS_URL"}))
# The embedding model exported once into this user's cache (the real HOME, read before any test
# swaps it) and shared by the agent processes every test starts, instead of one export each.
SHARED_EMBEDDER_DIR = str(embedder_export.default_dir())


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    for name in DECLARED_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HERMES_EMBEDDER_DIR", SHARED_EMBEDDER_DIR)
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fake_ssh(tmp_path):
    """An ``ssh`` look-alike that runs the remote command locally (no sshd here)."""
    script = tmp_path / "ssh"
    script.write_text('#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


# Tests that build or enter a chroot share /var/tmp/hermes-rehearsal and mount points: one worker.
CHROOT_TESTS = ("tests/image/", "tests/providers/test_image_build.py", "tests/e2e/test_rehearsal.py")


def pytest_collection_modifyitems(config, items):
    """Group tests for pytest-xdist's ``--dist loadgroup`` (``make test`` runs ``-n auto``).

    A file's tests stay on one worker, so its module and session fixtures (a Redis server, an
    Ansible run, the embedding model) are built once; the chroot users form one group.
    """
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix()
        group = "chroot" if path.startswith(CHROOT_TESTS) else path
        item.add_marker(pytest.mark.xdist_group(group))
