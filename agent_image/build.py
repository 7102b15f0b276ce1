"""The base-image build flow behind ``hermes image build``.

temporary server (``ubuntu-22.04``) → wait until running → run the pyinfra deploy
``agent_image/deploy.py`` over SSH → power off → ``create_image`` (a snapshot labelled ``app=hermes,
role=agent-base, version, git_sha``) → wait for the action → delete the temporary server.  The
server is deleted whatever happens, so a failed build never leaves a billed machine behind.

Hetzner Cloud API docs: "Create a Server", "Power off a Server", "Create Image from a Server"
(``type: snapshot``; the server should be off so the disk is consistent), "Delete a Server".
The resulting snapshot id is what ``Pulumi.<env>.yaml`` pins as ``snapshotId``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent_image.image_settings import ImageSettings

log = structlog.get_logger(__name__)

DEPLOY_PATH = Path(__file__).with_name("deploy.py")
#: Labels of every base snapshot; the shared stack looks images up by them.
SNAPSHOT_ROLE = "agent-base"


class ImageBuildError(RuntimeError):
    """The image build failed (the temporary server has been deleted, unless said otherwise)."""


@dataclass(frozen=True)
class ImageBuildConfig:
    """One image build.

    Attributes:
        version: project version baked into the image (label ``version``).
        git_sha: commit the wheel was built from (label ``git_sha``).
        wheel_path: the project wheel to install (``pip wheel . --no-deps -w dist``).
        ssh_key_path: private key whose public half is the Hetzner SSH key(s) below.
        ssh_key_names: Hetzner SSH key names to put on the temporary server.
        location: Hetzner location; snapshots are usable in every location.
        server_type: type of the temporary server (the smallest current x86 type).
        base_image: Hetzner system image to start from (Ubuntu 22.04 LTS).
        deploy_path: the pyinfra deploy to run.
        ready_timeout: how long to wait for the server to run / power off, seconds.
        poll_interval: pause between status polls, seconds.
        ssh_connect_retries: pyinfra SSH connection retries while sshd is still starting.
        embedder_dir: the exported embedding model to ship (``hermes image export-embedder``);
            empty: the deploy's default (``ImageSettings.embedder_source``).
    """

    version: str
    git_sha: str
    wheel_path: str
    ssh_key_path: str
    ssh_key_names: tuple[str, ...]
    location: str = "nbg1"
    server_type: str = "cx23"
    base_image: str = "ubuntu-22.04"
    deploy_path: str = str(DEPLOY_PATH)
    ready_timeout: float = 600.0
    poll_interval: float = 5.0
    ssh_connect_retries: int = 12
    embedder_dir: str = ""

    @property
    def snapshot_labels(self) -> dict[str, str]:
        """Labels of the snapshot: ``app``, ``role``, ``version``, ``git_sha``."""
        return {"app": "hermes", "role": SNAPSHOT_ROLE, "version": self.version,
                "git_sha": self.git_sha}

    @property
    def server_name(self) -> str:
        """Name of the temporary server (a valid hostname)."""
        raw = f"hermes-image-{self.version}-{self.git_sha[:8]}".lower()
        return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63]


@dataclass(frozen=True)
class ImageBuildResult:
    """The built snapshot: its id, description and labels."""

    snapshot_id: int
    description: str
    labels: dict[str, str]


DeployRunner = Callable[[str, ImageBuildConfig], None]


def run_pyinfra_deploy(address: str, config: ImageBuildConfig) -> None:
    """Run the deploy against ``root@address`` with pyinfra's CLI.

    Raises:
        ImageBuildError: pyinfra exited non-zero.
    """
    pyinfra = Path(sys.executable).with_name("pyinfra")
    argv = [str(pyinfra) if pyinfra.exists() else "pyinfra", address, config.deploy_path,
            "--ssh-user", "root", "--ssh-key", config.ssh_key_path,
            "--data", f"hermes_wheel={config.wheel_path}",
            "--data", f"ssh_connect_retries={config.ssh_connect_retries}", "-y"]
    if config.embedder_dir:
        argv += ["--data", f"hermes_embedder_source={config.embedder_dir}"]
    log.info("image_deploy_start", address=address, argv=argv)
    completed = subprocess.run(argv, check=False, cwd=Path(config.deploy_path).resolve().parent.parent)
    if completed.returncode != 0:
        raise ImageBuildError(f"pyinfra deploy failed on {address} (exit {completed.returncode})")


def _wait_status(client, server_id: int, wanted: str, config: ImageBuildConfig,
                 sleep: Callable[[float], None], clock: Callable[[], float]):
    deadline = clock() + config.ready_timeout
    while True:
        server = client.servers.get_by_id(server_id)
        if server.status == wanted:
            return server
        if clock() >= deadline:
            raise ImageBuildError(f"server {server_id} is {server.status!r}, not {wanted!r}, "
                                  f"after {config.ready_timeout:.0f} s")
        sleep(config.poll_interval)


def build_image(client, config: ImageBuildConfig, deploy: DeployRunner = run_pyinfra_deploy,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> ImageBuildResult:
    """Run the whole flow and return the snapshot; always delete the temporary server.

    Args:
        client: an ``hcloud.Client``.
        deploy: runs the deploy against the server's public IPv4 (tests replace only this).

    Raises:
        ImageBuildError: any step failed (a missing wheel or lock before any server
            exists); ``hcloud.APIException`` passes through from the create call (no server
            exists then).
    """
    from hcloud.images import Image
    from hcloud.locations import Location
    from hcloud.server_types import ServerType
    from hcloud.ssh_keys import SSHKey

    if not Path(config.wheel_path).is_file():
        raise ImageBuildError(f"wheel {config.wheel_path} does not exist")
    # The deploy installs the default image's lock from this checkout's requirements/.
    lock = ImageSettings(hermes_wheel=config.wheel_path).lock
    if not Path(lock).is_file():
        raise ImageBuildError(f"lock {lock} does not exist: run `make lock` in the checkout")
    created = client.servers.create(
        name=config.server_name, server_type=ServerType(name=config.server_type),
        image=Image(name=config.base_image), location=Location(name=config.location),
        ssh_keys=[SSHKey(name=n) for n in config.ssh_key_names],
        labels={"app": "hermes", "role": "image-build", "version": config.version},
    )
    server_id = created.server.id
    log.info("image_build_server_created", server_id=server_id, name=config.server_name)
    try:
        return _build_on(client, created, config, deploy, sleep, clock)
    except Exception as err:
        if isinstance(err, ImageBuildError):
            raise
        raise ImageBuildError(f"image build failed: {err}") from err
    finally:
        _delete_quietly(client, server_id)


def _build_on(client, created, config, deploy, sleep, clock) -> ImageBuildResult:
    for action in [created.action, *(created.next_actions or [])]:
        action.wait_until_finished()
    server = _wait_status(client, created.server.id, "running", config, sleep, clock)
    deploy(server.public_net.ipv4.ip, config)
    server.power_off().wait_until_finished()
    server = _wait_status(client, server.id, "off", config, sleep, clock)
    description = f"Hermes agent base {config.version} ({config.git_sha[:12]})"
    image = server.create_image(description=description, type="snapshot",
                                labels=config.snapshot_labels)
    image.action.wait_until_finished()
    log.info("image_build_snapshot_created", snapshot_id=image.image.id)
    return ImageBuildResult(image.image.id, description, config.snapshot_labels)


def _delete_quietly(client, server_id: int) -> None:
    """Delete the temporary server; a failure here is logged loudly, never swallowed silently,
    but must not hide the build's own error."""
    from infra.hetzner_api import delete_server

    try:
        delete_server(client, server_id)
        log.info("image_build_server_deleted", server_id=server_id)
    except Exception as err:  # noqa: BLE001 - reported, and the sweep finds role=image-build
        log.error("image_build_server_not_deleted", server_id=server_id, error=str(err))
        print(f"WARNING: temporary server {server_id} could not be deleted: {err}; "  # noqa: T201
              f"delete it by hand (label role=image-build)", file=sys.stderr)
