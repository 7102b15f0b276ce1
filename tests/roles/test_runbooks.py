"""runbooks/: one per alert and routine operation, indexed, and every command real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "runbooks"


def _hermes_cli() -> dict[str, set[str]]:
    """The `hermes` CLI as click knows it: command -> its subcommands (empty: a leaf)."""
    group = cli_main.cli
    with click.Context(group) as ctx:
        commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    return {name: set(getattr(command, "commands", {})) for name, command in commands.items()}


HERMES_CLI = _hermes_cli()
# Tools a runbook step may call besides `hermes`: Pulumi, Ansible, pyinfra, systemd, Redis.
TOOLS = {"hermes", "pulumi", "ansible-playbook", "ansible-inventory", "pyinfra", "systemctl",
         "journalctl", "systemd-analyze", "systemd-cgtop", "redis-cli", "redis-check-aof",
         "ansible-vault"}
ROUTINE = {"image-build.md", "tenant-resize-deprovision.md", "secret-rotation.md", "control-host.md",
           "database-migrations.md", "backup-restore.md", "subscription-lifecycle.md",
           "whatsapp-setup.md", "firewall.md", "operators.md"}


def commands(text: str) -> list[str]:
    """Shell commands in ```sh blocks and in `inline code` that starts with a known tool."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        found += [line.strip() for line in block.splitlines() if line.strip()]
    # A lone tool name in prose (`hermes`) is a mention, not a step.
    found += [code for code in re.findall(r"`([^`\n]+)`", text)
              if code.split()[0] in TOOLS and len(code.split()) > 1]
    return found


def program(command: str) -> list[str]:
    """argv of a command, after leading VAR=value assignments."""
    argv = shlex.split(command)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
        argv.pop(0)
    return argv


def test_one_runbook_per_alert_and_routine_operation_all_indexed():
    rules = yaml.safe_load((REPO / "dashboards/alerts/hermes.rules.yml").read_text())
    alert_books = {Path(rule["annotations"]["runbook_url"]).name
                   for group in rules["groups"] for rule in group["rules"]}
    present = {path.name for path in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert present == alert_books | ROUTINE
    index = (RUNBOOKS / "README.md").read_text()
    assert set(re.findall(r"\]\(([\w.-]+\.md)\)", index)) == present


@pytest.mark.parametrize("runbook", sorted(p.name for p in RUNBOOKS.glob("*.md")))
def test_every_command_in_a_runbook_exists(runbook):
    text = (RUNBOOKS / runbook).read_text()
    for command in commands(text):
        argv = program(command)
        assert argv[0] in TOOLS, f"{runbook}: {command!r} is not one of our tools"
        if argv[0] == "hermes":
            assert argv[1] in HERMES_CLI, f"{runbook}: no command hermes {argv[1]}"
            if HERMES_CLI[argv[1]]:
                assert argv[2] in HERMES_CLI[argv[1]], f"{runbook}: {command!r}"
        if argv[0] == "ansible-playbook":
            playbook = next(arg for arg in argv if arg.endswith(".yml"))
            assert (REPO / playbook).is_file(), f"{runbook}: {playbook} missing"
        if argv[0] == "pyinfra":
            assert (REPO / "agent_image/deploy.py").is_file()
