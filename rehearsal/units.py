"""Read systemd unit and environment files the way systemd does, for the rehearsal.

systemd itself cannot run here, so the rehearsal starts a unit's ``ExecStart`` with the
unit's ``Environment=``, ``EnvironmentFile=``, ``User=``, ``WorkingDirectory=`` and ``RuntimeDirectory=``
(systemd.exec(5)). Only
these keys are interpreted; resource limits and sandboxing are not applied (stated in the
transcript).
"""

from __future__ import annotations

import configparser
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServiceUnit:
    """The parts of a ``.service`` unit the rehearsal honours.

    Attributes:
        name: unit file name, e.g. ``hermes-agent.service``.
        argv: ``ExecStart`` split like a shell command line (systemd quoting is a subset).
        environment: the ``Environment=`` assignments, every line of them in order.
        environment_files: ``(path, optional)`` pairs; a leading ``-`` makes a file optional.
        user: ``User=`` or ``""`` (root).
        working_directory: ``WorkingDirectory=`` or ``"/"``.
        runtime_directories: ``RuntimeDirectory=`` names, relative to ``/run``; systemd
            creates each empty when the unit starts.
    """

    name: str
    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[tuple[str, bool]] = field(default_factory=list)
    user: str = ""
    working_directory: str = "/"
    runtime_directories: list[str] = field(default_factory=list)


def read_unit(path: Path) -> ServiceUnit:
    """Parse ``path`` (a ``.service`` file). Repeated keys keep the last value, as systemd
    does for single-valued settings.

    Raises:
        ValueError: the unit has no ``[Service] ExecStart``.
    """
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep keys' case (configparser docs)
    parser.read_string(path.read_text())
    if not parser.has_option("Service", "ExecStart"):
        raise ValueError(f"{path} has no [Service] ExecStart")
    service = parser["Service"]
    files = []
    raw_files = service.get("EnvironmentFile", "")
    for item in raw_files.split():
        files.append((item[1:], True) if item.startswith("-") else (item, False))
    return ServiceUnit(
        name=path.name,
        argv=shlex.split(service["ExecStart"]),
        environment=_environment_lines(path.read_text()),
        environment_files=files,
        user=service.get("User", ""),
        working_directory=service.get("WorkingDirectory", "/"),
        runtime_directories=service.get("RuntimeDirectory", "").split(),
    )


def _environment_lines(text: str) -> dict[str, str]:
    """The ``[Service]`` section's ``Environment=`` lines: each holds space-separated
    ``KEY=value`` assignments, quoted like a shell word (systemd.exec(5)); later ones win.
    Read from the text because configparser keeps only the last of a repeated key."""
    env: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and line.startswith("Environment="):
            for assignment in shlex.split(line.split("=", 1)[1]):
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


def parse_environment_file(text: str) -> dict[str, str]:
    """Parse ``EnvironmentFile=`` syntax: ``KEY=value`` lines, ``#``/``;`` comments, values
    optionally in double or single quotes (double quotes allow backslash escapes)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def unit_environment(unit: ServiceUnit, root: Path = Path("/")) -> dict[str, str]:
    """Return the unit's environment: its ``Environment=`` assignments, then the variables of
    its environment files read below ``root``, which override them (systemd.exec(5)).

    Raises:
        FileNotFoundError: a required (non ``-``) environment file is missing.
    """
    env = dict(unit.environment)
    for path, optional in unit.environment_files:
        file = root / path.lstrip("/")
        if not file.exists():
            if optional:
                continue
            raise FileNotFoundError(f"{unit.name}: EnvironmentFile {path} does not exist")
        env.update(parse_environment_file(file.read_text()))
    return env


def passwd_ids(root: Path, user: str) -> tuple[int, int, str]:
    """Return ``(uid, gid, home)`` of ``user`` from ``root``'s ``/etc/passwd``.

    Raises:
        KeyError: no such user in that passwd file.
    """
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3]), fields[5]
    raise KeyError(f"user {user!r} is not in {root / 'etc/passwd'}")


def group_id(root: Path, group: str) -> int:
    """Return the gid of ``group`` from ``root``'s ``/etc/group``.

    Raises:
        KeyError: no such group.
    """
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    raise KeyError(f"group {group!r} is not in {root / 'etc/group'}")
