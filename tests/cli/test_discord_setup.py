"""``hermes discord setup`` run as a subprocess against the Discord REST stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from standins.discord_api import DiscordApiStandin

HERMES = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api():
    with DiscordApiStandin() as standin:
        yield standin


def run_setup(api, data_dir: Path, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "HERMES_"))}
    env.update({"DISCORD_BOT_TOKEN": token or api.bot_token, "DISCORD_API_BASE": api.base_url,
                "DISCORD_APPLICATION_ID": api.application_id, "HERMES_DATA_DIR": str(data_dir),
                "HERMES_PUBLIC_URL": "https://hermes.test"})
    return subprocess.run([*HERMES, "discord", "setup"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_setup_overwrites_the_global_commands_once_then_changes_nothing(api, tmp_path):
    api.rate_limit_next(0.2)  # the first call is rate limited: setup waits and carries on
    first = run_setup(api, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "commands: updated (9)"
    assert "https://hermes.test/webhooks/discord" in first.stdout
    commands = {c["name"]: c for c in api.commands}
    assert list(commands) == ["ask", "link", "remember", "forget", "memory", "cron", "usage",
                              "status", "help"]
    assert commands["remember"]["description"] == "Store a fact or preference"  # the agent's registry
    assert commands["ask"]["options"] == [{"type": 3, "name": "question", "description": "What to ask",
                                           "required": True}]
    assert all(1 <= len(c["description"]) <= 100 for c in api.commands)

    again = run_setup(api, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "commands: unchanged (9)"
    assert [m for m, path, _ in api.requests if m == "PUT"] == ["PUT"]


def test_setup_with_a_bad_token_fails_clearly(api, tmp_path):
    result = run_setup(api, tmp_path, token="wrong")
    assert result.returncode != 0
    assert "401" in result.stderr and "wrong" not in result.stderr
