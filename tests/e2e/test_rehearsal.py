"""`hermes rehearsal` (what `make rehearsal` runs): the production path on this machine.

Payment → the real tenant program → a server booted from the pyinfra-built snapshot running
the tenant's real cloud-init and the image's units → Telegram reply from the Anthropic
stand-in → upgrade resizes → cancellation archives to moto's S3 and deletes the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal.run import REPLY, SERVER_TYPES

ROOT = Path(__file__).resolve().parents[2]


def transcript(stdout: str) -> list[tuple[str, str]]:
    """``(speaker, text)`` per transcript line (``[   1.23s] who  text``)."""
    return [m.groups() for line in stdout.splitlines()
            if (m := re.match(r"^\[\s*[\d.]+s\]\s+(\S+)\s+(.*)$", line))]


@pytest.mark.timeout(1800)
def test_rehearsal_runs_payment_to_reply_to_resize_to_archive():
    if os.geteuid() != 0 or not (shutil.which("chroot") and shutil.which("mount")):
        pytest.skip("the rehearsal needs root, chroot and mount")
    hermes = Path(sys.executable).parent / "hermes"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HERMES_"))}
    env["PATH"] = f"{hermes.parent}:{env.get('PATH', '')}"
    done = subprocess.run([str(hermes), "rehearsal", "--timeout", "180"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1700, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lines = transcript(done.stdout)
    said = [f"{who} {text}" for who, text in lines]
    speakers = [who for who, _ in lines]
    assert speakers.index("stripe") < speakers.index("bot") < speakers.index("agent"), output

    ready = next(text for who, text in lines if "(payment -> ready)" in text)
    assert float(re.search(r"ready ([\d.]+)s after payment", ready).group(1)) > 0
    assert any(who == "vm" and "hermes-agent.service" in text and "hermes-huey.service" in text
               for who, text in lines), output
    # The reply the Anthropic stand-in streamed is what the user sees in Telegram.
    assert dict(lines)["agent"] == REPLY
    delivered = next(s for s in said if "reply delivered" in s)
    assert int(re.search(r"(\d+) editMessageText", delivered).group(1)) >= 1, delivered
    assert any(f"resized to {SERVER_TYPES['heavy']}" in s and "plan=heavy" in s for s in said)
    archive = next(text for who, text in lines if who == "s3")
    assert re.search(r"\((\d+) bytes\)", archive) and int(
        re.search(r"\((\d+) bytes\)", archive).group(1)) > 0
    assert any("deleted; agent processes" in s and s.endswith("gone") for s in said), output
    assert "rehearsal passed" in done.stdout
