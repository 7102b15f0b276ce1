"""System packages the base image needs (apt, plus the deadsnakes PPA for Python 3.11 and
NodeSource's repository for Node.js LTS)."""

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from agent_image.image_settings import ImageSettings

#: NodeSource's signing key (fingerprint 6F71F525282841EEDAF851B42F59B5F99B1BE0B4, as published
#: at https://github.com/nodesource/distributions), kept in the repository so the build never
#: trusts a key fetched at build time.
NODESOURCE_KEY = Path(__file__).resolve().parents[1] / "keys" / "nodesource.asc"
NODESOURCE_KEYRING = "/etc/apt/keyrings/nodesource.asc"

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


def nodesource_line(settings: ImageSettings) -> str:
    """The apt source line of ``hermes_nodejs_repo``, signed by ``NODESOURCE_KEYRING`` only.

    ``nodistro`` is NodeSource's one suite for every Debian and Ubuntu release.
    """
    return f"deb [signed-by={NODESOURCE_KEYRING}] {settings.hermes_nodejs_repo} nodistro main"


def python_packages(settings: ImageSettings) -> list[str]:
    """Interpreter packages for ``settings.hermes_python`` (e.g. python3.11 + its venv module)."""
    return [settings.hermes_python, f"{settings.hermes_python}-venv"]


@deploy("Install system packages")
def install_packages(settings: ImageSettings) -> None:
    """apt-get install the base packages, add the Python PPA, install the interpreter, then
    Node.js from ``hermes_nodejs_repo`` (``nodejs`` brings ``npm`` and ``npx``).

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
    # MCP servers users add are mostly started with `npx` (agent/mcp_client): Node.js LTS and
    # its npm/npx, from NodeSource since Ubuntu 22.04's nodejs (12) is past its end of life.
    files.directory(name="Create the apt keyring directory", path="/etc/apt/keyrings", mode="755")
    files.put(name="Install NodeSource's signing key", src=str(NODESOURCE_KEY),
              dest=NODESOURCE_KEYRING, mode="644")
    repo = apt.repo(name="Add NodeSource's Node.js LTS repository", src=nodesource_line(settings),
                    filename="nodesource")
    apt.update(name="Read NodeSource's package list", _if=any_changed(repo))
    apt.packages(name="Install Node.js", packages=["nodejs"], no_recommends=True)
