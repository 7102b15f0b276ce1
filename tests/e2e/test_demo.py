"""`hermes demo` (what `make demo` runs) ends in a real agent reply, offline and without keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support.serve import ROOT


def test_demo_prints_a_transcript_ending_in_the_agents_reply():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HERMES_"))}
    done = subprocess.run([sys.executable, "-m", "cli.main", "demo"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [m.groups() for line in done.stdout.splitlines()
             if (m := re.match(r"^\[\s*[\d.]+s\]\s+(\S+)\s+(.*)$", line))]
    speakers = [who for who, _ in lines]
    assert speakers.index("stripe") < speakers.index("bot") < speakers.index("agent")
    reply = dict(lines)["agent"]
    assert reply.strip() and not reply.startswith("Linked!")
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", dict(lines)["web"])
    assert "stopped cleanly (exit 0)" in done.stdout
