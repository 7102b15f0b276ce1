"""Prometheus node_exporter from a pinned GitHub release, checked against its sha256."""

from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from agent_image.image_settings import ImageSettings
from agent_image.operations.templating import template_path

BINARY = "/usr/local/bin/node_exporter"
CACHE_DIR = "/var/cache/hermes"
UNIT = "node_exporter.service"


def extract_command(tarball: str) -> str:
    """Shell command that copies the ``node_exporter`` binary out of the release tarball.

    Release tarballs hold ``node_exporter-<version>.linux-<arch>/node_exporter``.
    """
    return (
        f"tar -xzf {tarball} -C /usr/local/bin --strip-components=1 --wildcards "
        "'*/node_exporter' && chmod 755 /usr/local/bin/node_exporter"
    )


@deploy("Install node_exporter")
def install_node_exporter(settings: ImageSettings) -> None:
    """Download (sha256-verified), unpack to /usr/local/bin, own user, systemd unit."""
    server.user(
        name="Create the node_exporter user",
        user="node_exporter",
        system=True,
        shell="/usr/sbin/nologin",
        ensure_home=False,
    )
    files.directory(name="Create the download cache", path=CACHE_DIR, mode="755")
    tarball = f"{CACHE_DIR}/node_exporter-{settings.node_exporter_version}.tar.gz"
    download = files.download(
        name=f"Download node_exporter {settings.node_exporter_version}",
        src=settings.node_exporter_download_url,
        dest=tarball,
        sha256sum=settings.node_exporter_sha256,
    )
    server.shell(
        name="Unpack node_exporter",
        commands=[extract_command(tarball)],
        _if=download.did_change,
    )
    unit = files.template(
        name=f"Write {UNIT}",
        src=template_path("node_exporter.service.j2"),
        dest=f"/etc/systemd/system/{UNIT}",
        mode="644",
        settings=settings,
    )
    if not settings.hermes_manage_services:
        return
    systemd.daemon_reload(name="Reload systemd", _if=any_changed(unit))
    systemd.service(name=f"Enable and start {UNIT}", service=UNIT, running=True, enabled=True)
