"""Run the Ansible roles for real through ansible-runner with a local connection.

Roles are pointed at temporary paths through their variables (``*_conf_path``,
``*_manage_packages: false`` ...), so nothing on this machine outside tmp is touched.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
VENV_BIN = Path(sys.executable).parent


@dataclass
class PlaybookRun:
    """Outcome of one ansible-runner run: status ("successful"/"failed"), rc, per-host
    stats ({"changed": {"localhost": 2}, ...}) and the full stdout for messages."""

    status: str
    rc: int
    stats: dict
    stdout: str

    def changed(self, host: str = "localhost") -> int:
        return (self.stats or {}).get("changed", {}).get(host, 0)


def local_inventory(groups: dict[str, dict[str, dict]] | None = None) -> dict:
    """A YAML-style inventory: localhost (local connection, this interpreter) plus
    optional extra groups of hosts with their hostvars."""
    children = {
        name: {"hosts": hosts} for name, hosts in (groups or {}).items()
    }
    return {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                }
            },
            "children": children,
        }
    }


@pytest.fixture(scope="session", autouse=True)
def venv_on_path():
    """ansible-runner starts ``ansible-playbook`` from PATH: use this venv's."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{VENV_BIN}:{old}"
    yield
    os.environ["PATH"] = old


@pytest.fixture(scope="session")
def run_playbook(tmp_path_factory):
    """``run_playbook(playbook, extravars, inventory=None, cmdline="") -> PlaybookRun``."""
    import ansible_runner

    def run(playbook, extravars=None, inventory=None, cmdline=""):
        private = tmp_path_factory.mktemp("runner")
        result = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook),
            inventory=inventory or local_inventory(),
            extravars=extravars or {},
            cmdline=cmdline or None,
            envvars={
                "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
                "ANSIBLE_REMOTE_TEMP": str(private / "tmp"),
            },
            quiet=True,
            timeout=180,
        )
        return PlaybookRun(result.status, result.rc, result.stats, result.stdout.read())

    return run


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def apply_role(run_playbook):
    """``apply_role(role, vars, check=False, inventory=None) -> PlaybookRun``."""

    def apply(role, variables, check=False, inventory=None):
        return run_playbook(
            PLAYBOOKS / "apply_role.yml",
            {"role_under_test": role, **variables},
            inventory=inventory,
            cmdline="--check --diff" if check else "",
        )

    return apply


@pytest.fixture(scope="session")
def verify_role(run_playbook):
    """``verify_role(role, vars) -> PlaybookRun``: run only the role's tasks/verify.yml."""

    def verify(role, variables):
        return run_playbook(PLAYBOOKS / "verify_role.yml", {"role_under_test": role, **variables})

    return verify


@pytest.fixture(scope="session")
def make_inventory():
    """``make_inventory({"role_redis": {"redis-1": {...hostvars}}}) -> inventory dict``."""
    return local_inventory


@pytest.fixture(scope="session")
def release_server(tmp_path_factory):
    """Serve files over HTTP on 127.0.0.1 as a download site would.

    Yields ``(directory, base_url)``; files written into ``directory`` are served.
    """
    import http.server
    import threading

    directory = tmp_path_factory.mktemp("downloads")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format, *args):
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
