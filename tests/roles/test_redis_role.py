"""roles/redis applied for real: it issues a private CA and a server certificate, the rendered
redis.conf starts a real redis-server (TLS only, noeviction), and the role's own verify step
checks it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

ADMIN_PASSWORD = "correct-horse-battery"


def redis_vars(root: Path, port: int, **overrides) -> dict:
    return {
        "redis_manage_packages": False,
        "redis_manage_service": False,
        "redis_conf_path": str(root / "etc/redis.conf"),
        "redis_acl_file": str(root / "etc/users.acl"),
        "redis_data_dir": str(root / "data"),
        "redis_pid_file": str(root / "redis.pid"),
        "redis_bind_address": "127.0.0.1",
        "redis_tls_port": port,
        "redis_tls_dir": str(root / "tls"),
        "redis_tls_ca_fetch_dest": str(root / "controller/redis-ca.crt"),
        "redis_acl_admin_password": ADMIN_PASSWORD,
        **overrides,
    }


def cli(root: Path, port: int, *args: str, user: str | None = "hermes-control") -> str:
    command = ["redis-cli", "--tls", "--cacert", str(root / "tls/ca.crt"),
               "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
    if user:
        command += ["--user", user, "--pass", ADMIN_PASSWORD]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()


@pytest.fixture
def redis_server(tmp_path):
    """Start redis-server on a rendered config; yields a starter, stops it afterwards."""
    processes = []

    def start(conf: Path, root: Path, port: int):
        proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        processes.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {proc.returncode}")
            if cli(root, port, "PING") == "PONG":
                return proc
            time.sleep(0.1)
        raise AssertionError("redis-server did not answer within 10 s")

    yield start
    for proc in processes:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server not installed",
)
def assert_certificates_issued(root: Path) -> None:
    """The role's CA signed a server certificate naming the Redis address and host name."""
    tls = root / "tls"
    ca = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tls / "redis.crt").read_bytes())
    assert cert.issuer == ca.subject != cert.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]  # the inventory host name
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.crt"),
                               str(tls / "redis.crt")], capture_output=True, text=True,
                              check=False)
    assert verified.returncode == 0, verified.stderr
    assert (tls / "ca.key").stat().st_mode & 0o077 == 0
    assert (tls / "redis.key").stat().st_mode & 0o077 == 0
    # The CA (public part only) is on the controller for the control role and the tenants.
    assert (root / "controller/redis-ca.crt").read_bytes() == (tls / "ca.crt").read_bytes()


def test_rendered_config_runs_a_tls_only_redis_that_refuses_rather_than_evicts(
    tmp_path, free_port, apply_role, verify_role, redis_server
):
    variables = redis_vars(tmp_path, free_port)
    applied = apply_role("redis", variables)
    assert applied.status == "successful", applied.stdout
    assert_certificates_issued(tmp_path)

    conf = (tmp_path / "etc/redis.conf").read_text()
    for line in ("appendonly yes", "save 3600 1", "save 60 10000", f"tls-port {free_port}",
                 "port 0", "maxmemory 3gb", "maxmemory-policy noeviction", "proto-max-bulk-len 1mb",
                 f"aclfile {tmp_path}/etc/users.acl", "bind 127.0.0.1",
                 f"tls-cert-file {tmp_path}/tls/redis.crt", f"tls-key-file {tmp_path}/tls/redis.key",
                 f"tls-ca-cert-file {tmp_path}/tls/ca.crt", "tls-auth-clients no"):
        assert line in conf.splitlines(), line

    redis_server(tmp_path / "etc/redis.conf", tmp_path, free_port)
    assert cli(tmp_path, free_port, "CONFIG", "GET", "maxmemory-policy").splitlines() == [
        "maxmemory-policy", "noeviction"]
    assert cli(tmp_path, free_port, "CONFIG", "GET", "maxmemory").splitlines()[-1] == str(3 * 1024**3)
    assert cli(tmp_path, free_port, "CONFIG", "GET", "proto-max-bulk-len").splitlines()[-1] == \
        str(1024**2)
    # The default user is off: an unauthenticated client gets nothing.
    assert "NOAUTH" in cli(tmp_path, free_port, "PING", user=None)

    verified = verify_role("redis", variables)
    assert verified.status == "successful", verified.stdout


def test_rerun_keeps_tenant_acl_users_added_at_run_time(
    tmp_path, free_port, apply_role, redis_server
):
    variables = redis_vars(tmp_path, free_port)
    assert apply_role("redis", variables).status == "successful"
    proc = redis_server(tmp_path / "etc/redis.conf", tmp_path, free_port)
    # What `hermes bus grant` does for a new tenant.
    assert cli(tmp_path, free_port, "ACL", "SETUSER", "tenant-42", "on", ">pw",
               "~hermes:*:42", "+@stream") == "OK"
    assert cli(tmp_path, free_port, "ACL", "SAVE") == "OK"
    proc.terminate()
    proc.wait(timeout=10)
    certificate = (tmp_path / "tls/redis.crt").read_bytes()

    rerun = apply_role("redis", variables)
    assert rerun.status == "successful", rerun.stdout
    assert rerun.changed() == 0, rerun.stdout
    assert (tmp_path / "tls/redis.crt").read_bytes() == certificate  # not re-issued
    assert "user tenant-42 " in (tmp_path / "etc/users.acl").read_text()

    # A certificate expiring within redis_tls_renew_before is re-issued by the same CA.
    renewal = apply_role("redis", {**variables, "redis_tls_renew_before": "+900d"})
    assert renewal.status == "successful", renewal.stdout
    assert (tmp_path / "tls/redis.crt").read_bytes() != certificate
    assert_certificates_issued(tmp_path)


def test_missing_admin_password_stops_a_real_converge(tmp_path, free_port, apply_role):
    variables = redis_vars(tmp_path, free_port, redis_manage_service=True,
                           redis_acl_admin_password="")
    result = apply_role("redis", variables)
    assert result.status == "failed"
    assert "redis_acl_admin_password is empty" in result.stdout
    assert not (tmp_path / "etc/redis.conf").exists()
