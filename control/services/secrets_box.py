"""Encryption at rest for third-party credentials (Slack bot tokens, connection API keys).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) through ``MultiFernet``: the first
key of ``HERMES_ENCRYPTION_KEYS`` encrypts, every key decrypts, so a key is rotated by putting
the new one first and re-encrypting (``rotate``) before the old one is removed
(https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from control.errors import ConfigError, HermesError
from control.settings import Settings


class DecryptionError(HermesError):
    """A stored secret could not be decrypted with any configured key."""

    code = "decryption_failed"


class SecretsBox:
    """Encrypts and decrypts short secrets (str) for storage in the database.

    Args:
        keys: url-safe base64 Fernet keys (32 bytes each), newest first.

    Raises:
        ConfigError: no key, or a key that is not a Fernet key.
    """

    def __init__(self, keys: list[str] | tuple[str, ...]):
        if not keys:
            raise ConfigError("HERMES_ENCRYPTION_KEYS is empty")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            raise ConfigError(f"HERMES_ENCRYPTION_KEYS holds an invalid Fernet key: {exc}") from None

    def encrypt(self, plain: str) -> str:
        """Return the Fernet token (ASCII text) of ``plain``."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Return the plain text of ``token``.

        Raises:
            DecryptionError: tampered, or encrypted with a key no longer configured.
        """
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise DecryptionError("stored secret cannot be decrypted with HERMES_ENCRYPTION_KEYS") \
                from None

    def rotate(self, token: str) -> str:
        """Return ``token`` re-encrypted with the newest key (``MultiFernet.rotate``)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise DecryptionError("stored secret cannot be decrypted with HERMES_ENCRYPTION_KEYS") \
                from None


def box_from_settings(settings: Settings) -> SecretsBox:
    """The ``SecretsBox`` of ``settings.encryption_keys``; in local mode (``HERMES_ENV=local``)
    without keys, a key created once in ``<data_dir>/encryption_key`` (0600).

    Raises:
        ConfigError: no key outside local mode, or an invalid key.
    """
    if settings.encryption_keys:
        return SecretsBox(settings.encryption_keys)
    if settings.env != "local":
        raise ConfigError("HERMES_ENCRYPTION_KEYS is required outside local mode")
    path = Path(settings.data_dir) / "encryption_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(Fernet.generate_key().decode())
    return SecretsBox([path.read_text().strip()])
