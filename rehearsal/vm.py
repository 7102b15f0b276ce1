"""Tenant "servers" booted from the snapshot directory: cloud-init and systemd, interpreted.

``ChrootMachines`` is what the hcloud stand-in calls when a server is created, powered off or
on, or deleted. A boot mounts an overlay of the snapshot (the image stays untouched, as a
Hetzner snapshot does), binds the host's ``/usr`` read-only (the image was built on it), then
runs the server's real cloud-init user data: ``write_files`` (owner, permissions) and
``runcmd`` ``systemctl enable|restart <units>``, where a unit is started from the image's own
unit file (``ExecStart``, ``Environment``, ``EnvironmentFile``, ``User``) in a chroot of the server's root, in
its own process group. Sources: cloud-init docs ("write_files", "runcmd"), systemd.exec(5).

Each server root also gets ``/run/hermes-rehearsal/bin/systemctl``, a shim that stops a
unit's process group, for commands the archive step runs "over SSH" (``ssh_standin``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rehearsal.units import group_id, passwd_ids, read_unit, unit_environment

UNIT_DIR = "etc/systemd/system"
RUN_DIR = "run/hermes-rehearsal"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Stops the process group recorded for each unit, then waits up to 20 s for it to exit.
SYSTEMCTL_SHIM = """#!/bin/sh
# Rehearsal stand-in for systemctl (no systemd in a chroot): only "stop UNIT...".
[ "$1" = stop ] || { echo "systemctl shim: only 'stop' is supported" >&2; exit 1; }
shift
for unit in "$@"; do
  pidfile=/run/hermes-rehearsal/$unit.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM -"$pid" 2>/dev/null
  i=0
  # Alive = /proc entry that is not a zombie (its parent, the rehearsal, reaps it later).
  while [ -r /proc/"$pid"/stat ] && ! grep -q ') Z ' /proc/"$pid"/stat && [ $i -lt 200 ]; do
    sleep 0.1; i=$((i+1))
  done
  kill -KILL -"$pid" 2>/dev/null
  rm -f "$pidfile"
done
"""


# cloud-init's cc_ssh keys the tenant program sets (infra/tenant_config.py ``_host_keys``).
HOST_KEY_MODULES = ("ssh_deletekeys", "ssh_genkeytypes", "ssh_keys")

class BootError(RuntimeError):
    """The server's user data could not be applied (unsupported module, missing unit...)."""


@dataclass
class Machine:
    """One booted server: its directories, mounts and unit processes."""

    server_id: int
    base: Path
    mounts: list[Path] = field(default_factory=list)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    enabled: list[str] = field(default_factory=list)
    boot_error: str = ""
    ca_source: str = ""

    @property
    def root(self) -> Path:
        return self.base / "root"


class ChrootMachines:
    """Boots and halts servers from ``snapshot`` (a directory built by the image deploy).

    Args:
        snapshot: the image root directory (lower layer of every server's overlay).
        workdir: where per-server directories live (``<id>/root``, ``<id>/logs``) and the
            ``by-ip/<address>`` links the archive step uses to find a server.
    """

    def __init__(self, snapshot: Path, workdir: Path):
        self.snapshot = Path(snapshot)
        self.workdir = Path(workdir)
        (self.workdir / "by-ip").mkdir(parents=True, exist_ok=True)
        self.machines: dict[int, Machine] = {}
        self.started_pids: list[int] = []  # every unit process ever started, for clean-up checks
        self._lock = threading.Lock()

    # -- hcloud stand-in hooks ----------------------------------------------------------
    def boot(self, server: dict, user_data: str | None) -> None:
        """Create the server's root and run its cloud-init; failures are kept in
        ``boot_error`` and in ``<id>/logs/cloud-init.log`` (a real VM would still be
        "running")."""
        machine = Machine(server["id"], self.workdir / str(server["id"]))
        with self._lock:
            self.machines[machine.server_id] = machine
        log = machine.base / "logs"
        log.mkdir(parents=True, exist_ok=True)
        try:
            self._mount(machine)
            for net in server.get("private_net") or []:
                link = self.workdir / "by-ip" / net["ip"]
                link.unlink(missing_ok=True)
                link.symlink_to(machine.root)
            self._cloud_init(machine, user_data or "")
        except Exception as exc:  # noqa: BLE001 - recorded, like cloud-init's own log
            machine.boot_error = f"{type(exc).__name__}: {exc}"
            (log / "cloud-init.log").write_text(machine.boot_error + "\n")

    def power_off(self, server_id: int) -> None:
        """Stop every unit of the server (ACPI shutdown)."""
        machine = self.machines.get(server_id)
        if machine:
            self._stop_units(machine)

    def power_on(self, server_id: int) -> None:
        """Start the enabled units again (boot from the existing disk)."""
        machine = self.machines.get(server_id)
        if machine and not machine.boot_error:
            for unit in machine.enabled:
                self._start_unit(machine, unit)

    def delete(self, server_id: int) -> None:
        """Stop the units, unmount and remove the server's directory."""
        with self._lock:
            machine = self.machines.pop(server_id, None)
        if machine is None:
            return
        self._stop_units(machine)
        for link in (self.workdir / "by-ip").iterdir():
            if link.is_symlink() and Path(os.readlink(link)) == machine.root:
                link.unlink()
        self._unmount(machine)
        # The unit logs outlive the server, for the rehearsal's kept logs.
        if (machine.base / "logs").is_dir():
            shutil.copytree(machine.base / "logs", self.workdir / f"{machine.server_id}-logs",
                            dirs_exist_ok=True)
        if not any(os.path.ismount(m) for m in machine.mounts):
            shutil.rmtree(machine.base, ignore_errors=True)

    def shutdown(self) -> None:
        """Delete every server still booted (rehearsal clean-up)."""
        for server_id in list(self.machines):
            self.delete(server_id)

    def running_units(self, server_id: int) -> dict[str, int]:
        """Return ``unit -> pid`` of the server's unit processes still alive."""
        machine = self.machines.get(server_id)
        if machine is None:
            return {}
        return {u: p.pid for u, p in machine.processes.items() if p.poll() is None}

    # -- boot steps ---------------------------------------------------------------------
    def _mount(self, machine: Machine) -> None:
        upper, work, root = (machine.base / n for n in ("upper", "work", "root"))
        for directory in (upper, work, root):
            directory.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={self.snapshot},upperdir={upper},workdir={work}", str(root)])
        machine.mounts.append(root)
        _run(["mount", "--bind", "/usr", str(root / "usr")])
        machine.mounts.append(root / "usr")
        _run(["mount", "-o", "remount,bind,ro", str(root / "usr")])
        if (root / "usr_local").is_dir():
            _run(["mount", "--bind", str(root / "usr_local"), str(root / "usr/local")])
            machine.mounts.append(root / "usr/local")
        _run(["mount", "-t", "proc", "proc", str(root / "proc")])
        machine.mounts.append(root / "proc")
        shim = root / RUN_DIR / "bin" / "systemctl"
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text(SYSTEMCTL_SHIM)
        shim.chmod(0o755)

    def _unmount(self, machine: Machine) -> None:
        for mount_point in reversed(machine.mounts):
            subprocess.run(["umount", "-l", str(mount_point)], check=False,
                           capture_output=True)

    def _cloud_init(self, machine: Machine, user_data: str) -> None:
        if not user_data.startswith("#cloud-config"):
            raise BootError("user data is not a #cloud-config document")
        document = yaml.safe_load(user_data) or {}
        unknown = set(document) - {"write_files", "runcmd", *HOST_KEY_MODULES}
        if unknown:
            raise BootError(f"cloud-config modules not interpreted here: {sorted(unknown)}")
        self._host_keys(machine.root, document)
        for item in document.get("write_files") or []:
            self._write_file(machine.root, item)
        env_file = machine.root / "etc/hermes/agent.env"
        machine.ca_source = ("cloud-init (HERMES_BUS_CA_FILE)" if env_file.exists() and
                             "HERMES_BUS_CA_FILE=" in env_file.read_text() else "none")
        for command in document.get("runcmd") or []:
            argv = command if isinstance(command, list) else ["sh", "-c", command]
            self._runcmd(machine, [str(a) for a in argv])

    @staticmethod
    def _host_keys(root: Path, document: dict) -> None:
        """cloud-init's cc_ssh as the tenant program uses it: delete the image's host keys, write
        the pinned pair (private 0600, public 0644), generate none."""
        if not set(document) & set(HOST_KEY_MODULES):
            return
        if document.get("ssh_genkeytypes"):
            raise BootError("ssh_genkeytypes other than [] not interpreted")
        ssh_dir = root / "etc/ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        if document.get("ssh_deletekeys"):
            for old in ssh_dir.glob("ssh_host_*key*"):
                old.unlink()
        for name, content in (document.get("ssh_keys") or {}).items():
            kind, _, part = name.rpartition("_")
            if part not in ("private", "public"):
                raise BootError(f"ssh_keys entry {name!r} not interpreted")
            path = ssh_dir / f"ssh_host_{kind}_key{'.pub' if part == 'public' else ''}"
            path.write_text(content if content.endswith("\n") else content + "\n")
            path.chmod(0o600 if part == "private" else 0o644)

    @staticmethod
    def _write_file(root: Path, item: dict) -> None:
        if item.get("encoding") not in (None, "text/plain"):
            raise BootError(f"write_files encoding {item['encoding']!r} not interpreted")
        path = root / item["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if item.get("append") else "w"
        with open(path, mode) as handle:
            handle.write(item.get("content", ""))
        # cloud-init's defaults: root:root, 0644.
        owner, _, group = (item.get("owner") or "root:root").partition(":")
        uid = passwd_ids(root, owner)[0]
        gid = group_id(root, group or owner)
        os.chown(path, uid, gid)
        os.chmod(path, int(str(item.get("permissions") or "0644"), 8))

    def _runcmd(self, machine: Machine, argv: list[str]) -> None:
        if len(argv) < 3 or argv[0] != "systemctl" or argv[1] not in ("enable", "restart",
                                                                         "start"):
            raise BootError(f"runcmd {argv} not interpreted (only systemctl enable|start|restart)")
        for unit in argv[2:]:
            if not (machine.root / UNIT_DIR / unit).is_file():
                raise BootError(f"unit {unit} is not in the image")
            if argv[1] == "enable":
                if unit not in machine.enabled:
                    machine.enabled.append(unit)
            else:
                self._stop_unit(machine, unit)
                self._start_unit(machine, unit)

    # -- units --------------------------------------------------------------------------
    def _start_unit(self, machine: Machine, unit_name: str) -> None:
        """``systemctl start``: a no-op while the unit's process runs."""
        running = machine.processes.get(unit_name)
        if running is not None and running.poll() is None:
            return
        root = machine.root
        unit = read_unit(root / UNIT_DIR / unit_name)
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        userspec = []
        if unit.user:
            uid, gid, home = passwd_ids(root, unit.user)
            env.update(HOME=home, USER=unit.user, LOGNAME=unit.user)
            userspec = [f"--userspec={uid}:{gid}"]
        env.update(unit_environment(unit, root))
        with open(machine.base / "logs" / f"{unit_name}.log", "ab") as log:
            process = subprocess.Popen(
                ["chroot", *userspec, str(root), "/bin/sh", "-c",
                 'cd "$0" && exec "$@"', unit.working_directory, *unit.argv],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        machine.processes[unit_name] = process
        self.started_pids.append(process.pid)
        (root / RUN_DIR / f"{unit_name}.pid").write_text(f"{process.pid}\n")

    def _stop_unit(self, machine: Machine, unit_name: str, timeout: float = 20.0) -> None:
        process = machine.processes.pop(unit_name, None)
        if process is None:
            return
        stop_process_group(process, timeout)
        (machine.root / RUN_DIR / f"{unit_name}.pid").unlink(missing_ok=True)

    def _stop_units(self, machine: Machine) -> None:
        for unit_name in list(machine.processes):
            self._stop_unit(machine, unit_name)


def stop_process_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session``), then
    SIGKILL it after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BootError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
