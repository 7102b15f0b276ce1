"""Third-party credentials are stored encrypted; keys rotate without losing a secret."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from cryptography.fernet import Fernet

from control.errors import ConfigError
from control.services.secrets_box import DecryptionError, SecretsBox, box_from_settings
from control.settings import Settings


def test_a_secret_round_trips_and_the_stored_text_does_not_contain_it():
    box = SecretsBox([Fernet.generate_key().decode()])
    token = box.encrypt("xoxb-slack-bot-token")
    assert "xoxb" not in token
    assert box.decrypt(token) == "xoxb-slack-bot-token"


def test_rotation_puts_the_new_key_first_and_old_tokens_still_open():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretsBox([old]).encrypt("sk_live_key")
    rotated = SecretsBox([new, old]).rotate(token)
    assert SecretsBox([new]).decrypt(rotated) == "sk_live_key"
    with pytest.raises(DecryptionError):
        SecretsBox([new]).decrypt(token)


def test_a_tampered_token_is_refused():
    box = SecretsBox([Fernet.generate_key().decode()])
    token = box.encrypt("secret")
    with pytest.raises(DecryptionError):
        box.decrypt(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))


def test_local_mode_creates_one_private_key_and_production_requires_keys(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    first = box_from_settings(settings).encrypt("a")
    assert box_from_settings(settings).decrypt(first) == "a"  # the same key next time
    assert oct(os.stat(tmp_path / "encryption_key").st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError):
        box_from_settings(replace(settings, env="prod"))
    with pytest.raises(ConfigError):
        SecretsBox(["not-a-fernet-key"])
    assert Settings.from_env({"HERMES_ENCRYPTION_KEYS": "k1, k2"}).encryption_keys == ("k1", "k2")
