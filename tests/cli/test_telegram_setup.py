"""``hermes telegram setup`` run as a subprocess against the Bot API stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.commands import HANDLERS
from standins.telegram_bot_api import TelegramBotApiStandin

HERMES = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bot_api():
    with TelegramBotApiStandin() as api:
        yield api


def run_setup(bot_api, data_dir: Path, secret: str = "s3cret-Token_1",
              public_url: str = "https://hermes.test") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "HERMES_"))}
    env.update({"TELEGRAM_BOT_TOKEN": bot_api.token, "TELEGRAM_API_BASE": bot_api.base_url,
                "TELEGRAM_WEBHOOK_SECRET": secret, "HERMES_PUBLIC_URL": public_url,
                "HERMES_DATA_DIR": str(data_dir)})
    return subprocess.run([*HERMES, "telegram", "setup"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_setup_registers_webhook_with_secret_and_the_agents_commands(bot_api, tmp_path):
    result = run_setup(bot_api, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "webhook: updated https://hermes.test/webhooks/telegram",
        f"commands: updated ({len(HANDLERS)})"]
    [call] = bot_api.calls_for("setWebhook")
    assert call.params["url"] == "https://hermes.test/webhooks/telegram"
    assert call.params["secret_token"] == "s3cret-Token_1"
    assert call.params["drop_pending_updates"] is False
    assert set(call.params["allowed_updates"]) == {"message", "edited_message", "callback_query"}
    menu = {c["command"]: c["description"] for c in bot_api.commands[('{"type": "default"}', "")]}
    assert list(menu) == list(HANDLERS)
    assert menu["remember"] == "Store a fact or preference"
    assert menu["start"] == "Greet a new user"
    fingerprint = tmp_path / "telegram-webhook.sha256"
    assert oct(fingerprint.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in fingerprint.read_text()


def test_second_setup_changes_nothing(bot_api, tmp_path):
    assert run_setup(bot_api, tmp_path).returncode == 0
    again = run_setup(bot_api, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "updated" not in again.stdout
    assert len(bot_api.calls_for("setWebhook")) == 1
    assert len(bot_api.calls_for("setMyCommands")) == 1
    assert len(bot_api.calls_for("getWebhookInfo")) == 2


def test_rotated_secret_re_registers_the_webhook(bot_api, tmp_path):
    assert run_setup(bot_api, tmp_path).returncode == 0
    rotated = run_setup(bot_api, tmp_path, secret="rotated-Secret_2")
    assert rotated.stdout.splitlines()[0].startswith("webhook: updated")
    assert "commands: unchanged" in rotated.stdout
    assert bot_api.webhook["secret_token"] == "rotated-Secret_2"


def test_setup_without_webhook_secret_refuses_and_registers_nothing(bot_api, tmp_path):
    result = run_setup(bot_api, tmp_path, secret="")
    assert result.returncode != 0
    assert "TELEGRAM_WEBHOOK_SECRET" in result.stderr
    assert bot_api.calls == []


def test_telegram_refusal_is_reported_without_the_token(bot_api, tmp_path):
    result = run_setup(bot_api, tmp_path, public_url="http://hermes.test")
    assert result.returncode != 0
    assert "An HTTPS URL must be provided" in result.stderr
    assert bot_api.token not in result.stderr + result.stdout
