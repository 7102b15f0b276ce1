"""systemd units for the agent: inbox listener + Huey consumer, grouped by a target."""

from dataclasses import dataclass

from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from agent_image.image_settings import ImageSettings
from agent_image.operations.templating import template_path

UNIT_DIR = "/etc/systemd/system"
TARGET = "hermes-agent.target"


@dataclass(frozen=True)
class AgentService:
    """One ``agent.main`` subcommand run as a systemd service."""

    unit: str
    description: str
    command: str
    memory_field: str
    cpu_field: str


AGENT_SERVICES = (
    AgentService(
        unit="hermes-agent.service",
        description="Hermes agent inbox listener",
        command="listen",
        memory_field="hermes_listener_memory_max",
        cpu_field="hermes_listener_cpu_quota",
    ),
    AgentService(
        unit="hermes-huey.service",
        description="Hermes agent Huey consumer",
        command="worker",
        memory_field="hermes_worker_memory_max",
        cpu_field="hermes_worker_cpu_quota",
    ),
)


@deploy("Install the agent's systemd units")
def install_units(settings: ImageSettings) -> None:
    """Write the target and both services; enable them for boot without starting them.

    The units start at first boot, after cloud-init has written the tenant's env file.
    ``hermes_manage_services=False`` skips systemctl (test roots have no systemd).
    """
    writes = [
        files.template(
            name=f"Write {TARGET}",
            src=template_path("hermes-agent.target.j2"),
            dest=f"{UNIT_DIR}/{TARGET}",
            mode="644",
        )
    ]
    for service in AGENT_SERVICES:
        writes.append(
            files.template(
                name=f"Write {service.unit}",
                src=template_path("hermes-service.j2"),
                dest=f"{UNIT_DIR}/{service.unit}",
                mode="644",
                settings=settings,
                description=service.description,
                command=service.command,
                memory_max=getattr(settings, service.memory_field),
                cpu_quota=getattr(settings, service.cpu_field),
            )
        )
    if not settings.hermes_manage_services:
        return
    systemd.daemon_reload(name="Reload systemd", _if=any_changed(*writes))
    for unit in (TARGET, *(service.unit for service in AGENT_SERVICES)):
        systemd.service(name=f"Enable {unit}", service=unit, running=None, enabled=True)
