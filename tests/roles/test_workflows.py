"""The CI workflows: valid YAML with the triggers, gates and steps the pipeline relies on."""

from __future__ import annotations

from pathlib import Path

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
    pulumi = [s for s in steps(deploy) if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi and pulumi[0]["with"]["command"] == "up"
    assert pulumi[0]["with"]["stack-name"] == stack
    order = [s.get("uses", "") + s.get("run", "") for s in steps(deploy)]
    pulumi_at = next(i for i, s in enumerate(order) if s.startswith("pulumi/actions@"))
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
    assert opener and opener[0]["if"] == "failure()"
