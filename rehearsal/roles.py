"""Apply the real Ansible roles (``roles/redis``, ``roles/control``) to this machine with
ansible-runner and a local connection, every path pointed into the rehearsal's directory.

Package installation and systemd are switched off through the roles' own variables
(``*_manage_packages``, ``*_manage_service``); what the roles render (redis.conf, users.acl,
control.env, the gunicorn and Huey units) is then used as-is by ``rehearsal.run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = """---
- name: Apply {{ role_under_test }}
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: "{{ role_under_test }}"
"""


class RoleError(RuntimeError):
    """An Ansible role run failed (message holds the tail of its output)."""


@dataclass(frozen=True)
class RoleRun:
    """One role application: ansible-runner status and per-host ``changed`` count."""

    status: str
    changed: int
    stdout: str


def apply_role(role: str, variables: dict, private_dir: Path, timeout: int = 300) -> RoleRun:
    """Apply ``role`` to localhost with ``variables`` as extra vars.

    Raises:
        RoleError: the run did not succeed.
    """
    import ansible_runner

    private_dir.mkdir(parents=True, exist_ok=True)
    playbook = private_dir / "apply_role.yml"
    playbook.write_text(PLAYBOOK)
    venv_bin = str(Path(sys.executable).parent)
    inventory = {"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
    os.environ["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '')}"
    result = ansible_runner.run(
        private_data_dir=str(private_dir), playbook=str(playbook), inventory=inventory,
        extravars={"role_under_test": role, **variables},
        envvars={"ANSIBLE_ROLES_PATH": str(REPO / "roles"),
                 "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                 "ANSIBLE_LOCAL_TEMP": str(private_dir / "tmp"),
                 "ANSIBLE_REMOTE_TEMP": str(private_dir / "tmp")},
        quiet=True, timeout=timeout,
    )
    stdout = result.stdout.read()
    if result.status != "successful":
        raise RoleError(f"role {role} failed ({result.status}, rc {result.rc}):\n"
                        f"{stdout[-3000:]}")
    changed = (result.stats or {}).get("changed", {}).get("localhost", 0)
    return RoleRun(result.status, changed, stdout)


def issue_tls(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """Issue a CA and a server certificate for ``host`` signed by it (openssl), as the Redis
    host needs; returns ``{"ca", "cert", "key"}`` paths.

    Raises:
        subprocess.CalledProcessError: openssl failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "redis.key", directory / "redis.csr", directory / "redis.crt"
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host}\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
            str(ca_key), "-out", str(ca), "-subj", "/CN=Hermes rehearsal CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={host}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


def rendered_redis_settings(conf: Path) -> dict[str, str]:
    """Return redis.conf directives (last value wins) as ``name -> rest of line``."""
    settings = {}
    for raw in conf.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            settings[name] = value.strip().strip('"')
    return settings


def control_setting_variables(environment: dict[str, str]) -> dict[str, str]:
    """Map control settings to the control role's variables, one per setting
    (``roles/control/defaults/main.yml``): ``control_<name in lower case, without HERMES_>``,
    e.g. ``HERMES_ENV`` → ``control_env``, ``DATABASE_URL`` → ``control_database_url``."""
    return {f"control_{key.removeprefix('HERMES_').lower()}": value
            for key, value in environment.items()}
