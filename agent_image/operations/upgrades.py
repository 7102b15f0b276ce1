"""Unattended security upgrades (apt's periodic config + the origins allowed)."""

from pyinfra.api import deploy
from pyinfra.operations import files

from agent_image.image_settings import ImageSettings
from agent_image.operations.templating import template_path

APT_CONF_DIR = "/etc/apt/apt.conf.d"
CONFIG_FILES = ("20auto-upgrades", "50unattended-upgrades")


@deploy("Configure unattended upgrades")
def configure_unattended_upgrades(settings: ImageSettings) -> None:
    """Write ``/etc/apt/apt.conf.d/{20auto-upgrades,50unattended-upgrades}``."""
    for config in CONFIG_FILES:
        files.template(
            name=f"Write {config}",
            src=template_path(f"{config}.j2"),
            dest=f"{APT_CONF_DIR}/{config}",
            mode="644",
            settings=settings,
        )
