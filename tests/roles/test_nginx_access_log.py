"""The control role's nginx access log keeps tokens out (issue 19, finding 12): the site's
``hermes_masked`` format, served by a real nginx, logs a reset link without its token."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

SITE = Path(__file__).resolve().parents[2] / "roles/control/templates/nginx-site.conf.j2"
SECRET = "s3cr3t-token-value"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, deadline_s: float = 20.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_logs_requests_with_tokens_and_query_strings_masked(tmp_path):
    # The site's log format and maps come before its upstream and hold no template expression.
    header = SITE.read_text().split("upstream hermes_control", 1)[0]
    assert "{{" not in header.split("\n", 1)[1]
    port, log_file = free_port(), tmp_path / "access.log"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\ndaemon off;\nevents {{}}\n"
        f"http {{\n client_body_temp_path {tmp_path}/body;\n proxy_temp_path {tmp_path}/proxy;\n"
        f" fastcgi_temp_path {tmp_path}/fcgi;\n uwsgi_temp_path {tmp_path}/uwsgi;\n"
        f" scgi_temp_path {tmp_path}/scgi;\n"
        f"{header.split(chr(10), 1)[1]}\n"
        f" server {{\n  listen 127.0.0.1:{port};\n  access_log {log_file} hermes_masked;\n"
        f"  location / {{ return 200 ok; }}\n }}\n}}\n")
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up)
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/reset/{SECRET}", headers={"Referer": f"https://h.test/reset/{SECRET}"})
        httpx.get(f"{base}/signup/verify/{SECRET}")
        httpx.get(f"{base}/media/{SECRET}")
        httpx.get(f"{base}/slack/oauth_redirect?code={SECRET}&state={SECRET}",
                  headers={"Referer": f"https://h.test/slack/install?x={SECRET}"})
        wait_until(lambda: log_file.exists() and log_file.read_text().count("\n") >= 5)
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)
    written = log_file.read_text()
    assert SECRET not in written, written
    assert '"GET /reset/*** HTTP/1.1"' in written and '"https://h.test/reset/***"' in written
    assert '"GET /signup/verify/*** HTTP/1.1"' in written and '"GET /media/*** HTTP/1.1"' in written
    assert '"GET /slack/oauth_redirect HTTP/1.1"' in written
    assert '"https://h.test/slack/install"' in written
