"""Test-wide isolation (Hermes Agent's habit): a private HOME, no credentials, UTC, offline models."""

from __future__ import annotations

import stat

import pytest

CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "HERMES_LLM",
                   "HERMES_MODEL", "DATABASE_URL", "REDIS_URL", "HERMES_BUS", "HERMES_BUS_URL",
                   "STRIPE_WEBHOOK_SECRET", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET",
                   "TELEGRAM_API_BASE", "HCLOUD_TOKEN", "HERMES_DATA_DIR", "HERMES_PORT")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_ssh(tmp_path):
    """An ``ssh`` look-alike that runs the remote command locally (no sshd here)."""
    script = tmp_path / "ssh"
    script.write_text('#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)
