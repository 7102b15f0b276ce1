"""roles/node_exporter applied for real: download from a (loopback) release site, verify the
sha256, unpack, install the binary and its unit, then run the role's verify step."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from pathlib import Path

import pytest

VERSION = "1.8.2"
STUB = b"#!/bin/sh\necho 'node_exporter, version 1.8.2 (branch: HEAD, revision: stand-in)'\n"


@pytest.fixture(scope="module")
def release(release_server) -> tuple[str, str]:
    """A release-shaped tarball on the loopback site: (url, sha256)."""
    directory, base_url = release_server
    name = f"node_exporter-{VERSION}.linux-amd64"
    tarball = directory / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/node_exporter")
        info.size, info.mode = len(STUB), 0o755
        tar.addfile(info, io.BytesIO(STUB))
    return f"{base_url}/{tarball.name}", hashlib.sha256(tarball.read_bytes()).hexdigest()


def node_exporter_vars(root: Path, url: str, sha256: str) -> dict:
    return {
        "node_exporter_manage_service": False,
        "node_exporter_create_user": False,
        "node_exporter_download_url": url,
        "node_exporter_sha256": sha256,
        "node_exporter_bin_dir": str(root / "bin"),
        "node_exporter_cache_dir": str(root / "cache"),
        "node_exporter_unit_dir": str(root / "units"),
        "node_exporter_listen_address": "10.0.0.2:9100",
    }


def test_release_is_installed_and_verified(tmp_path, release, apply_role):
    (tmp_path / "bin").mkdir()
    (tmp_path / "units").mkdir()
    result = apply_role("node_exporter", node_exporter_vars(tmp_path, *release))
    assert result.status == "successful", result.stdout
    binary = tmp_path / "bin/node_exporter"
    assert binary.read_bytes() == STUB
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    unit = (tmp_path / "units/node_exporter.service").read_text()
    assert (f"ExecStart={tmp_path}/bin/node_exporter --web.listen-address=10.0.0.2:9100 "
            "--collector.systemd") in unit
    assert "Restart=always" in unit
    # The verify step ran the binary and found the pinned version.
    assert "Check the installed binary is the pinned version" in result.stdout

    again = apply_role("node_exporter", node_exporter_vars(tmp_path, *release))
    assert again.status == "successful" and again.changed() == 0, again.stdout


def test_checksum_mismatch_installs_nothing(tmp_path, release, apply_role):
    (tmp_path / "bin").mkdir()
    url, _ = release
    result = apply_role("node_exporter", node_exporter_vars(tmp_path, url, "0" * 64))
    assert result.status == "failed"
    assert "checksum" in result.stdout.lower()
    assert not (tmp_path / "bin/node_exporter").exists()
