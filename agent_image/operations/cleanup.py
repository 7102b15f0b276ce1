"""Make the server snapshot-ready: forget its cloud-init instance and its machine id.

Equivalent to ``cloud-init clean --logs --machine-id`` but written as idempotent
operations, so it also runs where cloud-init is not installed (test roots). Every VM
booted from the snapshot then runs cloud-init afresh and gets a machine id of its own.
"""

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

CLOUD_INIT_STATE = "/var/lib/cloud"
CLOUD_INIT_LOGS = ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log")
MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"


@deploy("Clean instance state before the snapshot")
def clean_instance_state() -> None:
    """Remove cloud-init state and logs; leave /etc/machine-id empty (systemd fills it at boot)."""
    files.directory(name="Remove cloud-init state", path=CLOUD_INIT_STATE, present=False)
    for log in CLOUD_INIT_LOGS:
        files.file(name=f"Remove {log}", path=log, present=False)
    files.put(
        name="Truncate /etc/machine-id",
        src=StringIO(""),
        dest=MACHINE_ID,
        mode="444",
    )
    # dbus reads its id from here; a stale copy would survive the truncation above.
    files.link(
        name="Point dbus at /etc/machine-id",
        path=DBUS_MACHINE_ID,
        target=MACHINE_ID,
        force=True,
        force_backup=False,
    )
