"""roles/control rendered for real: gunicorn serving control:create_app() behind nginx/TLS, a
complete control.env from the inventory and the Vault, Telegram registration, idempotence."""

from __future__ import annotations

import configparser
import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from control.settings import Settings
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.declared import env_names

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/control"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
SECRETS = {
    "vault_control_database_url": "postgresql://hermes:db-Pa55@db/hermes",
    "vault_control_redis_url": "rediss://hermes-control:redis-Pa55@10.0.1.20:6379/0",
    "vault_control_stripe_webhook_secret": "whsec_stripe-Secret",
    "vault_control_telegram_bot_token": "123456:TEST",
    "vault_control_telegram_webhook_secret": "tg-Webhook_Secret",
    "vault_control_hcloud_token": "hcloud-Secret-Token",
    "vault_control_pulumi_config_passphrase": "pulumi pass $phrase \"quoted\"",
    "vault_control_anthropic_api_key": "sk-ant-Secret",
    "vault_control_secret_key": "session-Signing-Key",
    "vault_control_encryption_keys": "bm90LWEtcmVhbC1rZXktanVzdC0zMi1ieXRlcy1sb25nISE=",
    "vault_control_stripe_secret_key": "sk_test_Stripe-Secret",
}


def settings_read_by_control() -> set[str]:
    """Every environment variable control/settings.py declares (``wire.declared``), the
    agent variables it hands on (AGENT_ENV_KEYS) included."""
    return {name for names in env_names(Settings).values() for name in names}


def read_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """Parse control.env as systemd/sh would: ``({name: value}, {names marked unset})``."""
    values, unset = {}, set()
    for line in path.read_text().splitlines():
        if line.startswith("# ") and line.endswith(" unset: control/settings.py default"):
            unset.add(line.split()[1])
        elif line and not line.startswith("#"):
            key, _, raw = line.partition("=")
            assert raw.startswith('"') and raw.endswith('"'), line
            # Inside double quotes, both sh and systemd unescape \\ \" \$ and \`.
            values[key] = re.sub(r'\\([\\"$`])', r"\1", raw[1:-1])
    return values, unset


def control_vars(root: Path, **extra) -> dict:
    return {
        "control_manage_packages": False,
        "control_manage_service": False,
        "control_acme_enabled": False,
        "control_telegram_setup": False,
        "control_config_dir": str(root / "etc/hermes"),
        "control_data_dir": str(root / "var/lib/hermes-control"),
        "control_unit_dir": str(root / "units"),
        "control_nginx_site_path": str(root / "nginx/sites-available/hermes-control.conf"),
        "control_nginx_enabled_path": str(root / "nginx/sites-enabled/hermes-control.conf"),
        "control_nginx_access_log": str(root / "nginx/access.log"),
        "control_server_name": "hermes.test",
        "control_env": "staging",
        "control_hetzner_snapshot_id": "160000001",
        "control_hetzner_network_id": "7",
        "control_hetzner_firewall_label": "hermes-tenant=staging",
        "control_pulumi_backend_url": "file:///var/lib/hermes-control/pulumi",
        **SECRETS,
        **extra,
    }


def read_unit(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser["Service"]


def test_gunicorn_serves_the_app_factory_behind_tls_nginx(tmp_path, apply_role, make_inventory):
    monitoring = {"role_monitoring": {"monitoring-1": {"hcloud_private_ipv4": "10.0.1.30"}}}
    result = apply_role("control", control_vars(tmp_path), inventory=make_inventory(monitoring))
    assert result.status == "successful", result.stdout

    web = read_unit(tmp_path / "units/hermes-control.service")
    assert web["ExecStart"].startswith("/opt/hermes-control/venv/bin/gunicorn --bind 127.0.0.1:8000")
    assert web["ExecStart"].endswith("'control:create_app()'")
    assert web["EnvironmentFile"] == f"-{tmp_path}/etc/hermes/control.env"
    assert web["Restart"] == "always"
    worker = read_unit(tmp_path / "units/hermes-control-huey.service")
    assert worker["ExecStart"].endswith("/bin/hermes worker --workers 4")

    site = (tmp_path / "nginx/sites-available/hermes-control.conf").read_text()
    assert "listen 443 ssl http2;" in site
    assert "ssl_certificate /etc/letsencrypt/live/hermes.test/fullchain.pem;" in site
    assert "server_name hermes.test;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "proxy_pass http://hermes_control;" in site
    metrics = site.split("location /metrics {")[1].split("}")[0]
    # Only the monitoring host (and loopback) may read /metrics, not the tenants' network.
    assert re.findall(r"allow (\S+);", metrics) == ["10.0.1.30", "127.0.0.1"]
    assert "deny all;" in metrics
    enabled = tmp_path / "nginx/sites-enabled/hermes-control.conf"
    assert enabled.is_symlink() and enabled.resolve() == tmp_path / "nginx/sites-available/hermes-control.conf"


def test_a_discord_bot_token_adds_the_gateway_unit_for_direct_messages(tmp_path, apply_role):
    without = apply_role("control", control_vars(tmp_path / "plain"))
    assert without.status == "successful", without.stdout
    assert not (tmp_path / "plain/units/hermes-discord-gateway.service").exists()

    result = apply_role("control", control_vars(tmp_path, control_discord_setup=False,
                                                vault_control_discord_bot_token="discord-Bot-Token"))
    assert result.status == "successful", result.stdout
    gateway = read_unit(tmp_path / "units/hermes-discord-gateway.service")
    assert gateway["ExecStart"] == "/opt/hermes-control/venv/bin/hermes discord gateway"
    assert gateway["Restart"] == "always"
    assert gateway["EnvironmentFile"] == f"-{tmp_path}/etc/hermes/control.env"
    assert "discord-Bot-Token" not in result.stdout


def test_env_file_holds_every_setting_control_settings_reads(tmp_path, apply_role):
    names = settings_read_by_control()
    assert {"TELEGRAM_WEBHOOK_SECRET", "HERMES_PROVISIONER", "HCLOUD_TOKEN",
            "PULUMI_CONFIG_PASSPHRASE", "ANTHROPIC_API_KEY", "STRIPE_WEBHOOK_SECRET"} <= names
    mapping = yaml.safe_load((ROLE / "vars/main.yml").read_text())["__control_settings"]
    defaults = (ROLE / "defaults/main.yml").read_text()
    assert sorted(names - set(mapping)) == [], "settings the role cannot set"
    assert sorted(n for n in names if f"[{n}]" not in defaults) == [], "undocumented settings"

    result = apply_role("control", control_vars(tmp_path))
    assert result.status == "successful", result.stdout
    env_file = tmp_path / "etc/hermes/control.env"
    values, unset = read_env_file(env_file)
    assert sorted(names - set(values) - unset) == []
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"

    settings = Settings.from_env(values)
    assert settings.provisioner == "hetzner"
    assert settings.telegram_webhook_secret == "tg-Webhook_Secret"
    assert settings.public_url == "https://hermes.test"
    assert settings.pulumi_config_passphrase == SECRETS["vault_control_pulumi_config_passphrase"]
    assert settings.bus_url == SECRETS["vault_control_redis_url"]
    assert settings.llm_anthropic_api_key == "sk-ant-Secret"  # the LLM gateway keeps it
    assert settings.data_dir == str(tmp_path / "var/lib/hermes-control")
    for secret in SECRETS.values():
        assert secret not in result.stdout


def test_second_run_changes_nothing_and_registers_telegram_once(tmp_path, apply_role):
    with TelegramBotApiStandin() as bot_api:
        variables = control_vars(
            tmp_path, control_telegram_setup=True, control_venv=str(Path(sys.executable).parents[1]),
            control_telegram_api_base=bot_api.base_url)
        first = apply_role("control", variables)
        assert first.status == "successful", first.stdout
        assert first.changed() > 0
        second = apply_role("control", variables)
        assert second.status == "successful", second.stdout
        assert second.changed() == 0, second.stdout
        [webhook] = bot_api.calls_for("setWebhook")
        assert webhook.params["url"] == "https://hermes.test/webhooks/telegram"
        assert webhook.params["secret_token"] == "tg-Webhook_Secret"
        assert len(bot_api.calls_for("setMyCommands")) == 1


def test_deploy_without_its_secrets_stops_before_touching_the_host(tmp_path, apply_role):
    variables = control_vars(tmp_path, control_manage_service=True)
    for name in ("vault_control_telegram_webhook_secret", "vault_control_hcloud_token"):
        del variables[name]
    result = apply_role("control", variables)
    assert result.status == "failed"
    assert "control.env would lack TELEGRAM_WEBHOOK_SECRET, HCLOUD_TOKEN" in result.stdout
    assert not (tmp_path / "etc").exists()


def test_secrets_come_from_the_encrypted_vault_file(tmp_path, run_playbook):
    vault = tmp_path / "vault.yml"
    shutil.copy(REPO / "inventories/vault.example.yml", vault)
    password = tmp_path / "vault-pass"
    password.write_text("test-vault-password\n")
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", str(vault),
                    "--vault-password-file", str(password)], check=True, capture_output=True)
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    variables = {k: v for k, v in control_vars(tmp_path).items() if not k.startswith("vault_")}
    result = run_playbook(PLAYBOOKS / "apply_role.yml", {"role_under_test": "control", **variables},
                          cmdline=f"-e @{vault} --vault-password-file {password}")
    assert result.status == "successful", result.stdout
    values, _ = read_env_file(tmp_path / "etc/hermes/control.env")
    assert values["TELEGRAM_WEBHOOK_SECRET"] == "example-webhook-secret"
    assert values["HCLOUD_TOKEN"] == "example-hcloud-token"
    assert "OPENAI_API_KEY" not in values  # empty in the vault: left to the default


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hermes.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "fullchain.pem", directory / "privkey.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_accepts_the_site_with_acme_challenge_and_redirect(tmp_path, apply_role):
    cert_file, key_file = _self_signed(tmp_path)
    result = apply_role("control", control_vars(
        tmp_path, control_acme_enabled=True, control_acme_webroot=str(tmp_path / "acme"),
        control_certbot_hook_dir=str(tmp_path / "hooks"),
        control_tls_cert_file=str(cert_file), control_tls_key_file=str(key_file)))
    assert result.status == "successful", result.stdout
    site = tmp_path / "nginx/sites-enabled/hermes-control.conf"
    http = site.read_text().split("server {")[1]
    assert "location /.well-known/acme-challenge/ {" in http
    assert f"root {tmp_path}/acme;" in http
    assert (tmp_path / "acme/.well-known/acme-challenge").is_dir()
    assert "exec systemctl reload nginx" in (tmp_path / "hooks/reload-nginx").read_text()

    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                    f"http {{\n access_log off;\n include {site};\n}}\n")
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr
