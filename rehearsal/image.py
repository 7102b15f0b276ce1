"""The "snapshot": the base image built by the real pyinfra deploy into a directory.

``build_snapshot`` runs ``pyinfra -y @chroot<dir> agent_image/deploy.py`` (pyinfra's chroot
connector) exactly as the image build runs it against a temporary server, on a root prepared
like a fresh server (as ``tests/image/conftest.py`` does): the host's ``/usr`` bound read-only,
private ``/usr/local``, ``/etc``, ``/var``, ``/opt``. pip runs with the deploy's production
defaults and this machine's pip configuration (copied with ``/etc``; its local wheel
directories are bound read-only at the same paths while the deploy runs); node_exporter comes
from a loopback "GitHub release" (a stub binary: the internet's edge).

The directory is kept between runs under ``cache_dir`` keyed by the image's dependency set
(``dependency_key``, which covers the lock the image installs); each run re-applies the deploy,
which reinstalls only a changed wheel.
"""

from __future__ import annotations

import fcntl
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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("agent", "agent_image", "cli", "control", "infra", "standins", "wire")
NODE_EXPORTER_VERSION = "1.8.2"
STUB_NODE_EXPORTER = b"#!/bin/sh\necho 'node_exporter, version 1.8.2 (stand-in)'\n"
# This machine's package sources (pip.conf); bound into the root while the deploy runs pip.
PACKAGE_DIRS = ("/opt/wheels", "/opt/pypi", "/opt/pypi-more")


class ImageBuildError(RuntimeError):
    """The snapshot could not be built (wheel build, mounts or the deploy failed)."""


@dataclass(frozen=True)
class Snapshot:
    """A built image directory.

    Attributes:
        root: the image root (mount nothing into it while servers use it as overlay lower).
        wheel: the project wheel installed in it.
        seconds: how long this run's build (wheel + deploy) took.
        fresh: ``True`` when the root was created by this run (no cache hit).
    """

    root: Path
    wheel: Path
    seconds: float
    fresh: bool


def build_wheel(work: Path) -> Path:
    """Build this project's wheel from a copy of the tree (keeps build/ out of the checkout).

    Raises:
        ImageBuildError: pip wheel failed.
    """
    src = work / "hermes-max"
    src.mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    shutil.copy2(REPO / "README.md", src / "README.md")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCE_DIRS:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    dist = work / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"pip wheel failed: {result.stderr[-2000:]}")
    (wheel,) = dist.glob("hermes_max-*.whl")
    return wheel


def seed_root(root: Path) -> None:
    """Lay out a fresh server's root: usr-merged links, a copy of /etc, device nodes."""
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    for directory in ("usr", "usr_local/bin", "opt", "var/lib", "var/log", "var/cache", "dev",
                      "proc", "run", "root", "mnt"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    shutil.copytree("/etc", root / "etc", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/apt.conf.d").mkdir(parents=True, exist_ok=True)
    for device, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        os.mknod(root / "dev" / device, 0o666 | 0o020000, os.makedev(1, minor))
        os.chmod(root / "dev" / device, 0o666)


@contextmanager
def build_mounts(root: Path):
    """Mount what the deploy needs for its run, and only for its run."""
    mounts: list[Path] = []

    def mount(*args: str, point: Path) -> None:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageBuildError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")
        mounts.append(point)

    try:
        mount("--bind", "/usr", str(root / "usr"), point=root / "usr")
        mount("-o", "remount,bind,ro", str(root / "usr"), point=root / "usr")
        mounts.pop()
        mount("--bind", str(root / "usr_local"), str(root / "usr/local"), point=root / "usr/local")
        mount("-t", "proc", "proc", str(root / "proc"), point=root / "proc")
        for directory in PACKAGE_DIRS:
            if Path(directory).is_dir():
                point = root / directory.lstrip("/")
                point.mkdir(parents=True, exist_ok=True)
                mount("--bind", "-o", "ro", directory, str(point), point=point)
        yield
    finally:
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
        for directory in PACKAGE_DIRS:
            point = root / directory.lstrip("/")
            if point.is_dir() and not os.path.ismount(point) and not any(point.iterdir()):
                point.rmdir()


@contextmanager
def node_exporter_release(work: Path):
    """Serve a release-shaped node_exporter tarball on loopback; yields ``(url, sha256)``."""
    name = f"node_exporter-{NODE_EXPORTER_VERSION}.linux-amd64"
    serve_dir = work / "release"
    serve_dir.mkdir()
    tarball = serve_dir / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for member, data, mode in ((f"{name}/node_exporter", STUB_NODE_EXPORTER, 0o755),
                                   (f"{name}/LICENSE", b"Apache-2.0\n", 0o644)):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(serve_dir), **kwargs)

        def log_message(self, *args):
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield (f"http://127.0.0.1:{server.server_port}/{tarball.name}",
               hashlib.sha256(tarball.read_bytes()).hexdigest())
    finally:
        server.shutdown()
        server.server_close()


def dependency_key() -> str:
    """Return a short hash of what shapes the image apart from our own code: the lock the
    image installs (``agent_image.image_settings``; the rehearsal builds the default image),
    the deploy itself (every file under ``agent_image/``) and the interpreter building it.
    Edits elsewhere keep the cached image (only the wheel is reinstalled); a new lock or a
    changed deploy builds a fresh one, so no package a former lock pinned and no file a former
    deploy wrote can survive in the image."""
    from agent_image.image_settings import ImageSettings

    lock = Path(ImageSettings(hermes_wheel="").lock)
    parts = [f"{lock.name}:{hashlib.sha256(lock.read_bytes()).hexdigest()}", sys.version]
    for path in sorted((REPO / "agent_image").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            parts.append(f"{path.relative_to(REPO)}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$HERMES_REHEARSAL_CACHE`` or ``/var/tmp/hermes-rehearsal``."""
    return Path(os.environ.get("HERMES_REHEARSAL_CACHE", "/var/tmp/hermes-rehearsal"))


def build_snapshot(cache_dir: Path | None = None, timeout: float = 1200.0) -> Snapshot:
    """Build (or refresh) the snapshot directory with the real deploy.

    Args:
        cache_dir: parent of the kept image directories.
        timeout: seconds allowed for the deploy run (the first one installs every agent
            dependency into the image's venv).

    Raises:
        ImageBuildError: the wheel build, a mount or the deploy failed.
        wire.embedder_export.EmbedderExportError: the embedding model cannot be exported
            (the image build host's step; torch is in the suite's venv).
    """
    from agent.memory.onnx_export import export as export_embedder
    from wire.embedder_export import default_dir as default_embedder_dir

    started = time.monotonic()
    cache_dir = cache_dir or default_cache_dir()
    root = cache_dir / f"snapshot-{dependency_key()}"
    fresh = not (root / "etc").is_dir()
    if fresh:
        # Images of former keys are never used again (and each holds a whole venv).
        for stale in cache_dir.glob("snapshot-*"):
            shutil.rmtree(stale, ignore_errors=True)
        root.mkdir(parents=True)
        seed_root(root)
    pyinfra = Path(sys.executable).parent / "pyinfra"
    with tempfile.TemporaryDirectory(prefix="hermes-wheel-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        kept = cache_dir / wheel.name
        shutil.copy2(wheel, kept)
        with node_exporter_release(work) as (url, sha256), build_mounts(root):
            data = {
                "hermes_wheel": str(kept),
                "hermes_install_packages": "false",
                "hermes_manage_services": "false",
                "hermes_python": "python3.11",
                "hermes_embedder_source": str(export_embedder(default_embedder_dir())),
                "node_exporter_download_url": url,
                "node_exporter_sha256": sha256,
            }
            args = [str(pyinfra), "-y", f"@chroot{root}", "agent_image/deploy.py"]
            for name, value in data.items():
                args += ["--data", f"{name}={value}"]
            result = subprocess.run(
                args, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                env={**os.environ, "PATH": f"{pyinfra.parent}:{os.environ.get('PATH', '')}"})
            (cache_dir / "deploy.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0:
                raise ImageBuildError(
                    f"pyinfra deploy failed (exit {result.returncode}); "
                    f"see {cache_dir / 'deploy.log'}:\n{(result.stdout + result.stderr)[-3000:]}")
    return Snapshot(root, kept, time.monotonic() - started, fresh)


@contextmanager
def use_snapshot(cache_dir: Path | None = None, wait: float = 1800.0):
    """Build the snapshot and keep it unchanged while the caller uses it.

    An exclusive ``flock`` on ``<cache_dir>/snapshot.lock`` covers the build, then is turned
    into a shared one for the ``with`` body: another rehearsal on this machine waits (up to
    ``wait`` seconds) instead of redeploying into an image that servers have mounted.

    Yields:
        The ``Snapshot``.

    Raises:
        ImageBuildError: the lock was not free within ``wait`` seconds, or the build failed.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "snapshot.lock", "w") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageBuildError(
                        f"another rehearsal held {lock.name} for {wait:.0f}s") from None
                time.sleep(1)
        snapshot = build_snapshot(cache_dir)
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield snapshot


if __name__ == "__main__":
    with use_snapshot() as built:
        print(f"snapshot {built.root} built in {built.seconds:.1f}s (fresh={built.fresh})")
