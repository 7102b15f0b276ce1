"""The base-image deploy, run for real with pyinfra against a chroot standing in for a
fresh server: the files, users and units it leaves behind are what every tenant VM boots."""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from wire import embedder_export

UNIT_DIR = Path("etc/systemd/system")


def read_unit(root: Path, unit: str) -> configparser.ConfigParser:
    """Parse a unit file; systemd allows repeated keys, so keep the last (strict=False)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((root / UNIT_DIR / unit).read_text())
    return parser


def passwd_entry(root: Path, user: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    raise AssertionError(f"{user} is not in the image's /etc/passwd")


def changed_operations(output: str) -> list[str]:
    """Operation rows of pyinfra's results table whose Success (= changed) column is set.

    Rows end with four columns: hosts, success, error, no change ("-" when zero).
    """
    changed = []
    in_table = False
    for line in output.splitlines():
        if line.strip().startswith("Operation") and "No Change" in line:
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        tokens = line.split()
        if len(tokens) < 5:
            continue
        name, success = " ".join(tokens[:-4]), tokens[-3]
        if name != "Grand total" and success != "-":
            changed.append(name)
    return changed


@pytest.mark.parametrize(
    ("unit", "command"),
    [("hermes-agent.service", "listen"), ("hermes-huey.service", "worker")],
)
def test_agent_units_restart_limit_and_harden_the_agent(deployed_root, unit, command):
    root, _ = deployed_root
    service = read_unit(root, unit)["Service"]
    assert service["ExecStart"] == f"/opt/hermes/venv/bin/python -m agent.main {command}"
    assert service["EnvironmentFile"] == "-/etc/hermes/agent.env"
    assert service["User"] == "hermes"
    assert service["Restart"] == "always"
    assert int(service["RestartSec"]) > 0
    for limit in ("MemoryMax", "CPUQuota", "TasksMax", "LimitNOFILE"):
        assert service[limit], f"{unit} has no {limit}"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/hermes"
    assert read_unit(root, unit)["Install"]["WantedBy"] == "hermes-agent.target"
    assert read_unit(root, unit)["Unit"]["PartOf"] == "hermes-agent.target"


def test_target_groups_both_agent_services_and_starts_at_boot(deployed_root):
    root, _ = deployed_root
    target = read_unit(root, "hermes-agent.target")
    assert set(target["Unit"]["Wants"].split()) >= {"hermes-agent.service", "hermes-huey.service"}
    assert target["Install"]["WantedBy"] == "multi-user.target"


def test_worker_gets_more_memory_than_the_listener(deployed_root):
    root, _ = deployed_root
    listener = read_unit(root, "hermes-agent.service")["Service"]
    worker = read_unit(root, "hermes-huey.service")["Service"]
    assert listener["MemoryMax"] == "512M"
    assert worker["MemoryMax"] == "75%"


def test_hermes_system_user_and_directories(deployed_root):
    root, _ = deployed_root
    user = passwd_entry(root, "hermes")
    assert int(user[2]) < 1000, "hermes must be a system user"
    assert user[5] == "/var/lib/hermes" and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    data = (root / "var/lib/hermes").stat()
    assert (data.st_uid, data.st_gid) == (uid, gid)
    assert stat.S_IMODE(data.st_mode) == 0o750
    config = (root / "etc/hermes").stat()
    assert (config.st_uid, config.st_gid) == (0, gid)
    assert stat.S_IMODE(config.st_mode) == 0o750
    # The tenant env file arrives later via cloud-init; the image must not carry one.
    assert not (root / "etc/hermes/agent.env").exists()
    # The user exists inside the image only, never on the machine running the build.
    with pytest.raises(KeyError):
        pwd.getpwnam("hermes")


def test_project_wheel_installed_in_the_agent_venv(deployed_root, project_wheel):
    root, _ = deployed_root
    assert (root / "opt/hermes/dist" / project_wheel.name).read_bytes() == project_wheel.read_bytes()
    show = subprocess.run(
        ["chroot", str(root), "/opt/hermes/venv/bin/pip", "show", "hermes-max"],
        capture_output=True, text=True, check=True,
    )
    assert "Version: 0.1.0" in show.stdout
    script = (
        "import importlib.metadata as m; "
        "print([e.value for e in m.entry_points(group='console_scripts', name='hermes')])"
    )
    entry_point = subprocess.run(
        ["chroot", str(root), "/opt/hermes/venv/bin/python", "-c", script],
        capture_output=True, text=True, check=True,
    )
    assert "cli.main:main" in entry_point.stdout


def test_agent_dependencies_come_from_the_lock_with_their_hashes(deployed_root, probe_lock):
    root, _ = deployed_root
    assert (root / "opt/hermes/dist/agent.txt").read_bytes() == probe_lock.read_bytes()
    show = subprocess.run(
        ["chroot", str(root), "/opt/hermes/venv/bin/pip", "show", "hermes-lock-probe"],
        capture_output=True, text=True, check=True,
    )
    assert "Version: 1.0" in show.stdout


def test_embedding_model_ships_exported_and_the_agent_units_point_at_it(deployed_root, exported_embedder):
    root, _ = deployed_root
    shipped = root / "opt/hermes/embedder"
    for name in embedder_export.FILES:
        assert (shipped / name).read_bytes() == (exported_embedder / name).read_bytes(), name
        assert stat.S_IMODE((shipped / name).stat().st_mode) == 0o644
    assert embedder_export.read_manifest(shipped)["name"] == "all-MiniLM-L6-v2"
    for unit in ("hermes-agent.service", "hermes-huey.service"):
        lines = (root / UNIT_DIR / unit).read_text().splitlines()
        assert "Environment=HERMES_EMBEDDER_DIR=/opt/hermes/embedder" in lines, unit


def test_packages_step_installs_nodejs_lts_from_nodesource(deployed_root, deploy_data, run_deploy):
    # The chroot has no apt sources to install from: pyinfra's dry run lists what the package
    # step would change on it (its facts are the root's dpkg database and /etc/apt).
    root, _ = deployed_root
    plan = run_deploy(root, {**deploy_data, "hermes_install_packages": "true", "hermes_python_ppa": ""},
                      dry=True)
    assert plan.returncode == 0, plan.output
    for operation in ("Install NodeSource's signing key", "Add NodeSource's Node.js LTS repository",
                      "Install Node.js"):
        (row,) = [line for line in plan.output.splitlines() if line.strip().endswith(operation)
                  or f"| {operation} " in line]
        assert row.split(operation, 1)[1].split()[0] == "1", row


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg missing")
def test_nodesource_key_in_the_repository_is_nodesources(tmp_path):
    # Fingerprint published by NodeSource (github.com/nodesource/distributions).
    shown = subprocess.run(["gpg", "--homedir", str(tmp_path), "--show-keys", "--with-colons",
                            "agent_image/keys/nodesource.asc"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    fingerprints = [line.split(":")[9] for line in shown.stdout.splitlines() if line.startswith("fpr:")]
    assert fingerprints[0] == "6F71F525282841EEDAF851B42F59B5F99B1BE0B4"


def test_node_exporter_installed_from_the_pinned_release(deployed_root):
    root, _ = deployed_root
    binary = root / "usr/local/bin/node_exporter"
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    version = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/node_exporter", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert "version 1.8.2" in version.stdout
    passwd_entry(root, "node_exporter")
    service = read_unit(root, "node_exporter.service")["Service"]
    assert service["User"] == "node_exporter"
    assert service["ExecStart"].startswith("/usr/local/bin/node_exporter ")
    assert service["Restart"] == "always"


def test_only_root_may_reach_the_metadata_service(deployed_root):
    root, _ = deployed_root
    rules = (root / "etc/hermes/metadata-guard.nft").read_text()
    assert "ip daddr 169.254.169.254 meta skuid != 0" in rules and "reject" in rules
    assert "type filter hook output" in rules
    unit = read_unit(root, "hermes-metadata-guard.service")
    assert unit["Service"]["ExecStart"] == "/usr/sbin/nft -f /etc/hermes/metadata-guard.nft"
    assert "hermes-agent.target" in unit["Unit"]["Before"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unattended_security_upgrades_configured(deployed_root):
    root, _ = deployed_root
    periodic = (root / "etc/apt/apt.conf.d/20auto-upgrades").read_text()
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    origins = (root / "etc/apt/apt.conf.d/50unattended-upgrades").read_text()
    assert '"${distro_id}:${distro_codename}-security";' in origins
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in origins


def test_cloud_init_state_and_machine_id_cleaned_for_the_snapshot(deployed_root):
    root, _ = deployed_root
    assert not (root / "var/lib/cloud").exists()
    assert not (root / "var/log/cloud-init.log").exists()
    assert not (root / "var/log/cloud-init-output.log").exists()
    assert (root / "etc/machine-id").read_text() == ""
    assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_pass_systemd_analyze_verify(deployed_root):
    root, _ = deployed_root
    units = ["hermes-agent.target", "hermes-agent.service", "hermes-huey.service",
             "node_exporter.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no",
         *(f"/{UNIT_DIR}/{unit}" for unit in units)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    # systemd skips lines it cannot parse with a warning and still exits 0.
    assert "ignoring" not in result.stderr, result.stderr


def test_second_run_changes_nothing(deployed_root, deploy_data, run_deploy):
    root, first = deployed_root
    assert any("Upload the project wheel" in op for op in changed_operations(first.output))
    second = run_deploy(root, deploy_data)
    assert second.returncode == 0, second.output
    assert "Grand total" in second.output
    assert changed_operations(second.output) == []


def test_changed_wheel_is_reinstalled(
    deployed_root, deploy_data, project_wheel, tmp_path, run_deploy
):
    root, _ = deployed_root
    # Same name, different bytes (a rebuild without a version bump): still a valid zip.
    rebuilt = tmp_path / project_wheel.name
    shutil.copy2(project_wheel, rebuilt)
    with zipfile.ZipFile(rebuilt, "a") as wheel:
        wheel.comment = b"rebuilt"
    rerun = run_deploy(root, {**deploy_data, "hermes_wheel": rebuilt})
    assert rerun.returncode == 0, rerun.output
    changed = changed_operations(rerun.output)
    assert any("Upload the project wheel" in op for op in changed), changed
    assert any("pip install the lock and the wheel" in op for op in changed), changed


def test_missing_embedder_export_fails_before_touching_the_server(
    image_root, deploy_data, tmp_path, run_deploy
):
    result = run_deploy(image_root, {**deploy_data, "hermes_embedder_source": tmp_path / "none"})
    assert result.returncode != 0
    assert f"no exported embedding model in {tmp_path / 'none'}" in result.output
    assert "hermes image export-embedder" in result.output


def test_missing_wheel_fails_before_touching_the_server(
    image_root, deploy_data, tmp_path, run_deploy
):
    result = run_deploy(image_root, {**deploy_data, "hermes_wheel": tmp_path / "nope.whl"})
    assert result.returncode != 0
    assert "is not an existing .whl file" in result.output
