"""roles/control rendered for real: gunicorn serving control:create_app() behind nginx/TLS."""

from __future__ import annotations

import configparser
from pathlib import Path


def control_vars(root: Path) -> dict:
    return {
        "control_manage_packages": False,
        "control_manage_service": False,
        "control_config_dir": str(root / "etc/hermes"),
        "control_data_dir": str(root / "var/lib/hermes-control"),
        "control_unit_dir": str(root / "units"),
        "control_nginx_site_path": str(root / "nginx/sites-available/hermes-control.conf"),
        "control_nginx_enabled_path": str(root / "nginx/sites-enabled/hermes-control.conf"),
        "control_server_name": "hermes.test",
        "control_environment": {"HERMES_ENV": "staging", "DATABASE_URL": "postgresql://db/hermes"},
    }


def read_unit(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser["Service"]


def test_gunicorn_serves_the_app_factory_behind_tls_nginx(tmp_path, apply_role):
    result = apply_role("control", control_vars(tmp_path))
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
    assert "ssl_certificate /etc/ssl/hermes/fullchain.pem;" in site
    assert "server_name hermes.test;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "proxy_pass http://hermes_control;" in site
    metrics = site.split("location /metrics {")[1].split("}")[0]
    assert "allow 10.0.0.0/16;" in metrics and "deny all;" in metrics
    enabled = tmp_path / "nginx/sites-enabled/hermes-control.conf"
    assert enabled.is_symlink() and enabled.resolve() == tmp_path / "nginx/sites-available/hermes-control.conf"

    env_file = tmp_path / "etc/hermes/control.env"
    assert "DATABASE_URL=postgresql://db/hermes" in env_file.read_text().splitlines()
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    # Secrets must not leak into the play output.
    assert "postgresql://db/hermes" not in result.stdout
