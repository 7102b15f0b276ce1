"""System packages the base image needs (apt, plus the deadsnakes PPA for Python 3.11)."""

from pyinfra.api import deploy
from pyinfra.operations import apt

from agent_image.image_settings import ImageSettings

BASE_PACKAGES = [
    "ca-certificates",
    "curl",
    "git",
    "nftables",  # operations/metadata_guard.py
    "tar",
    "unattended-upgrades",
    "software-properties-common",
    # Converts voice notes the transcription API does not accept (AMR, 3GP...) to Ogg/Opus
    # (agent/media/audio.py).
    "ffmpeg",
]


def python_packages(settings: ImageSettings) -> list[str]:
    """Interpreter packages for ``settings.hermes_python`` (e.g. python3.11 + its venv module)."""
    return [settings.hermes_python, f"{settings.hermes_python}-venv"]


@deploy("Install system packages")
def install_packages(settings: ImageSettings) -> None:
    """apt-get install the base packages, add the Python PPA, install the interpreter.

    Skipped entirely when ``hermes_install_packages`` is false (test roots have no apt).
    """
    if not settings.hermes_install_packages:
        return
    apt.packages(
        name="Install base packages",
        packages=BASE_PACKAGES,
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    if settings.hermes_python_ppa:
        apt.ppa(name="Add the Python PPA", src=settings.hermes_python_ppa)
    apt.packages(
        name=f"Install {settings.hermes_python}",
        packages=python_packages(settings),
        update=bool(settings.hermes_python_ppa),
        no_recommends=True,
    )
