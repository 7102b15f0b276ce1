"""Fixtures for the base-image deploy: the project wheel, a chroot that stands in for a
fresh server, a loopback "GitHub release" for node_exporter, a one-pin lock with a wheelhouse
standing in for PyPI, and the deploy run twice.

The chroot shares the host's /usr read-only (so a stray write cannot touch this machine),
with private, writable /usr/local, /etc, /var, /opt and /tmp.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from wire import embedder_export

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).parent / "pyinfra"
NODE_EXPORTER_VERSION = "1.8.2"
STUB_NODE_EXPORTER = b"#!/bin/sh\necho 'node_exporter, version 1.8.2 (stand-in)'\n"
# Seeded into the root to prove the cleanup step removes them.
STALE_MACHINE_ID = "0123456789abcdef0123456789abcdef\n"
SOURCE_DIRS = ("agent", "agent_image", "cli", "control", "infra", "standins", "wire")
# The wheelhouse inside the root that stands in for PyPI (the real lock is the rehearsal's).
WHEELHOUSE = "srv/wheelhouse"
PROBE = ("hermes-lock-probe", "1.0")


def _require_root_and_chroot() -> None:
    if os.geteuid() != 0 or shutil.which("chroot") is None or shutil.which("mount") is None:
        pytest.skip("the image deploy test needs root, chroot and mount")
    if not PYINFRA.exists():
        pytest.skip(f"pyinfra is not installed next to {sys.executable}")


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory) -> Path:
    """Build this project's wheel from a copy of the tree (the build writes build/ and
    *.egg-info next to the sources, which must not land in the shared checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    # Not named "src": setuptools treats a project dir called src as a src-layout root.
    src = work / "hermes-max"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    readme = REPO / "README.md"
    if readme.exists():
        shutil.copy2(readme, src / "README.md")
    else:
        (src / "README.md").write_text("Hermes Max\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCE_DIRS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
    dist = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        timeout=180,
    )
    (wheel,) = dist.glob("hermes_max-*.whl")
    return wheel


@dataclass(frozen=True)
class Release:
    """A node_exporter release tarball served on loopback."""

    url: str
    sha256: str


@pytest.fixture(scope="session")
def node_exporter_release(tmp_path_factory):
    """Serve a release-shaped tarball (``node_exporter-<v>.linux-amd64/node_exporter``)
    over HTTP on 127.0.0.1, as GitHub would."""
    serve_dir = tmp_path_factory.mktemp("release")
    name = f"node_exporter-{NODE_EXPORTER_VERSION}.linux-amd64"
    tarball = serve_dir / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for member, data, mode in (
            (f"{name}/node_exporter", STUB_NODE_EXPORTER, 0o755),
            (f"{name}/LICENSE", b"Apache-2.0\n", 0o644),
        ):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    handler = _quiet_handler(str(serve_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Release(
            url=f"http://127.0.0.1:{server.server_port}/{tarball.name}",
            sha256=hashlib.sha256(tarball.read_bytes()).hexdigest(),
        )
    finally:
        server.shutdown()
        server.server_close()


def _quiet_handler(directory: str):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, format, *args):
            return

    return Handler


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _seed_root(root: Path) -> None:
    """A fresh server's root (``rehearsal.image.seed_root``) plus the stale state of a server
    that has booted once, which the deploy's cleanup step must remove."""
    from rehearsal.image import seed_root

    seed_root(root)
    for directory in ("var/lib/dbus", "var/lib/cloud/instances/i-123"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for path in ("etc/apt/apt.conf.d/20auto-upgrades", "etc/apt/apt.conf.d/50unattended-upgrades"):
        (root / path).unlink(missing_ok=True)
    (root / "etc/machine-id").write_text(STALE_MACHINE_ID)
    (root / "var/lib/dbus/machine-id").write_text(STALE_MACHINE_ID)
    (root / "var/lib/cloud/instances/i-123/user-data.txt").write_text("#cloud-config\n")
    (root / "var/log/cloud-init.log").write_text("cloud-init ran here\n")
    (root / "var/log/cloud-init-output.log").write_text("cloud-init output\n")


@pytest.fixture(scope="session")
def image_root():
    """A chroot that looks like a fresh server: host /usr (read-only), the rest private."""
    _require_root_and_chroot()
    # Outside pytest's basetemp: pytest prunes old basetemps from other sessions, and must
    # never walk into a root that still has the host's /usr mounted.
    root = Path(tempfile.mkdtemp(prefix="hermes-image-root-"))
    _seed_root(root)
    mounts = []
    try:
        _mount("--bind", "/usr", str(root / "usr"))
        mounts.append(root / "usr")
        _mount("-o", "remount,bind,ro", str(root / "usr"))
        _mount("--bind", str(root / "usr_local"), str(root / "usr/local"))
        mounts.append(root / "usr/local")
        (root / "usr_local/bin").mkdir(exist_ok=True)
        _mount("-t", "proc", "proc", str(root / "proc"))
        mounts.append(root / "proc")
        yield root
    finally:
        for mount_point in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        # Only ever delete once nothing of the host is mounted inside.
        if not any(os.path.ismount(m) for m in mounts):
            shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class DeployRun:
    """The outcome of one ``pyinfra @chroot/... agent_image/deploy.py`` run."""

    returncode: int
    output: str


def _run_deploy(root: Path, data: dict[str, object], *, dry: bool = False) -> DeployRun:
    """Run the deploy through pyinfra's CLI, exactly as an operator would; ``dry``: only
    print the operations that would change the root (pyinfra ``--dry``)."""
    args = [str(PYINFRA), "--dry" if dry else "-y", f"@chroot{root}", "agent_image/deploy.py"]
    for key, value in data.items():
        args += ["--data", f"{key}={value}"]
    proc = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "PATH": f"{PYINFRA.parent}:{os.environ.get('PATH', '')}"},
    )
    return DeployRun(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def run_deploy():
    """``run_deploy(root, data, dry=False) -> DeployRun``: one pyinfra CLI run of the deploy."""
    return _run_deploy


def _probe_wheel(directory: Path) -> Path:
    """Write a minimal pure-Python wheel of ``PROBE`` into ``directory`` (PEP 427 layout)."""
    name, version = PROBE
    module, info = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="session")
def probe_lock(image_root, tmp_path_factory) -> Path:
    """A lock shaped like ``requirements/agent.txt`` pinning ``PROBE`` with its sha256, and the
    probe's wheel in the root's wheelhouse (the test's PyPI: the real lock needs the internet)."""
    wheelhouse = image_root / WHEELHOUSE
    wheelhouse.mkdir(parents=True)
    wheel = _probe_wheel(wheelhouse)
    lock = tmp_path_factory.mktemp("lock") / "agent.txt"
    lock.write_text(f"# This file was autogenerated by uv via the following command:\n"
                    f"#    make lock\n{PROBE[0]}=={PROBE[1]} \\\n"
                    f"    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    return lock


@pytest.fixture(scope="session")
def exported_embedder() -> Path:
    """The embedding model exported by ``hermes image export-embedder`` into this user's cache
    (the image build's step on its host; a no-op once exported)."""
    directory = embedder_export.default_dir()
    subprocess.run([str(Path(sys.executable).parent / "hermes"), "image", "export-embedder", str(directory)],
                   check=True, capture_output=True, timeout=300)
    return directory


@pytest.fixture(scope="session")
def deploy_data(project_wheel, probe_lock, node_exporter_release, exported_embedder) -> dict[str, object]:
    """Host data for a test root: no apt, no systemctl, no PyPI (the probe lock from the
    root's wheelhouse); node_exporter from loopback; the exported embedding model."""
    return {
        "hermes_wheel": project_wheel,
        "hermes_lock": probe_lock,
        "hermes_embedder_source": exported_embedder,
        "hermes_install_packages": "false",
        "hermes_manage_services": "false",
        "hermes_python": "python3.11",
        "hermes_pip_install_args": f"--no-index --find-links /{WHEELHOUSE}",
        "node_exporter_download_url": node_exporter_release.url,
        "node_exporter_sha256": node_exporter_release.sha256,
    }


@pytest.fixture(scope="session")
def deployed_root(image_root, deploy_data):
    """The root after one deploy run, plus that run's outcome."""
    first = _run_deploy(image_root, deploy_data)
    assert first.returncode == 0, first.output
    return image_root, first
