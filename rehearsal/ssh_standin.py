"""The rehearsal's SSH transport: ``ssh [-o k=v]... [-i key] user@address COMMAND``.

Real SSH cannot reach the rehearsal's servers (they are chroots, not hosts), so this runs
``COMMAND`` with ``/bin/sh -c`` inside the chroot of the server whose private address is
``address`` (``<servers dir>/by-ip/<address>``, written by ``rehearsal.vm``), with the
rehearsal's ``systemctl`` shim first on ``PATH``. stdout and stderr pass through; the exit
status is the command's (255 when the address is unknown, as ssh does for a failed connect).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rehearsal.vm import DEFAULT_PATH, RUN_DIR


def main(argv: list[str]) -> int:
    """Run the remote command; return its exit status.

    Environment:
        HERMES_REHEARSAL_SERVERS: the servers directory of ``rehearsal.vm.ChrootMachines``.
    """
    args = list(argv)
    while args and args[0] in ("-o", "-i", "-p", "-l"):
        del args[:2]
    if len(args) < 2:
        print("ssh stand-in: usage: ssh [-o opt] [-i key] user@address command", file=sys.stderr)
        return 255
    target, command = args[0], " ".join(args[1:])
    address = target.rsplit("@", 1)[-1]
    root = Path(os.environ["HERMES_REHEARSAL_SERVERS"]) / "by-ip" / address
    if not root.exists():
        print(f"ssh: connect to host {address} port 22: No route to host", file=sys.stderr)
        return 255
    env = {"PATH": f"/{RUN_DIR}/bin:{DEFAULT_PATH}", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.run(["chroot", str(root.resolve()), "/bin/sh", "-c", command],
                          env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
