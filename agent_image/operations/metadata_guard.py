"""Only root reaches the cloud metadata service (issue #19): an nftables owner match.

Hetzner serves a server's user data, which carries the agent's environment, at
``http://169.254.169.254/hetzner/v1/userdata`` to any process on it
(https://docs.hetzner.cloud/reference/cloud#server-metadata).  cloud-init reads it as root at
boot; afterwards nothing needs it, and the agent (user ``hermes``) processes files and pages
its tenant chose.  A rule in the ``output`` hook rejects packets to that address from any
non-root socket owner (``meta skuid != 0``, nftables wiki "Matching packet metainformation"),
loaded by a oneshot unit before the network and the agent come up.
"""

from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from agent_image.image_settings import ImageSettings
from agent_image.operations.templating import template_path

METADATA_ADDRESS = "169.254.169.254"
"""The link-local metadata address (Hetzner's, as every major cloud's)."""
RULES = "metadata-guard.nft"
"""The rules' file name in ``hermes_config_dir`` (made by ``python_env.create_user_and_dirs``)."""
UNIT = "hermes-metadata-guard.service"


@deploy("Restrict the metadata service to root")
def install_metadata_guard(settings: ImageSettings) -> None:
    """Write the rules and ``UNIT``; enable and start the unit (when services are managed).

    ``nft`` comes with the ``nftables`` base package (``operations/packages.py``).
    """
    path = f"{settings.hermes_config_dir}/{RULES}"
    rules = files.template(name=f"Write {path}", src=template_path("metadata-guard.nft.j2"),
                           dest=path, mode="644", metadata_address=METADATA_ADDRESS)
    unit = files.template(name=f"Write {UNIT}", src=template_path("hermes-metadata-guard.service.j2"),
                          dest=f"/etc/systemd/system/{UNIT}", mode="644", rules=path)
    if not settings.hermes_manage_services:
        return
    systemd.daemon_reload(name="Reload systemd", _if=any_changed(unit))
    systemd.service(name=f"Enable and start {UNIT}", service=UNIT, running=True, enabled=True)
    systemd.service(name=f"Reload {path}", service=UNIT, restarted=True, _if=any_changed(rules))
