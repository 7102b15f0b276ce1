"""The image installs what its declared LLM backends need (no root or chroot needed)."""

from __future__ import annotations

import shlex

import pytest

from agent_image.image_settings import ImageSettings, ImageSettingsError
from agent_image.operations.python_env import pip_install_commands

WHEEL = "/opt/hermes/dist/hermes_max-0.1.0-py3-none-any.whl"


def install_requirement(settings: ImageSettings) -> str:
    install, _refresh = pip_install_commands(settings, WHEEL)
    return shlex.split(install)[-1]


def test_default_image_supports_the_hosted_backends_with_the_agent_extra_only():
    settings = ImageSettings(hermes_wheel="w.whl")
    assert settings.llm_backends == ("anthropic", "openai_compat")
    assert install_requirement(settings) == f"{WHEEL}[agent]"


def test_local_backend_installs_the_local_llm_extra_too():
    settings = ImageSettings(hermes_wheel="w.whl", hermes_llm_backends="anthropic,local")
    assert install_requirement(settings) == f"{WHEEL}[agent,local-llm]"


def test_backends_given_as_inventory_list_are_accepted():
    settings = ImageSettings(hermes_wheel="w.whl", hermes_llm_backends=["local"])
    assert install_requirement(settings) == f"{WHEEL}[agent,local-llm]"


def test_refresh_reinstalls_the_project_alone():
    _install, refresh = pip_install_commands(ImageSettings(hermes_wheel="w.whl"), WHEEL)
    assert shlex.split(refresh)[-3:] == ["--force-reinstall", "--no-deps", WHEEL]


@pytest.mark.parametrize("backends", ["", "gpt5", "anthropic,ollama"])
def test_unknown_backend_is_refused(backends):
    with pytest.raises(ImageSettingsError, match="hermes_llm_backends"):
        ImageSettings(hermes_wheel="w.whl", hermes_llm_backends=backends)
