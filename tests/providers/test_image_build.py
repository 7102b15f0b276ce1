"""The base-image build flow against the hcloud API stand-in (only the SSH deploy is replaced)."""

from __future__ import annotations

import pytest

from agent_image.build import ImageBuildConfig, ImageBuildError, build_image


@pytest.fixture
def build_config(tmp_path):
    wheel = tmp_path / "hermes_max-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    return ImageBuildConfig(version="0.1.0", git_sha="0123456789abcdef0123", wheel_path=str(wheel),
                            ssh_key_path=str(key), ssh_key_names=("ops",), poll_interval=1.0)


class RecordingDeploy:
    def __init__(self, api, fail=False):
        self.api, self.fail, self.calls = api, fail, []

    def __call__(self, address, config):
        [server] = self.api.servers.values()
        self.calls.append((address, server["status"]))
        if self.fail:
            raise ImageBuildError("pyinfra deploy failed on 203.0.113.9 (exit 1)")


def test_build_snapshots_the_deployed_server_and_deletes_it(hcloud_api, hcloud_client,
                                                            build_config, sleeps):
    deploy = RecordingDeploy(hcloud_api)

    result = build_image(hcloud_client, build_config, deploy=deploy, sleep=sleeps)

    snapshot = hcloud_api.images[result.snapshot_id]
    assert snapshot["type"] == "snapshot" and snapshot["status"] == "available"
    assert snapshot["labels"] == {"app": "hermes", "role": "agent-base", "version": "0.1.0",
                                  "git_sha": "0123456789abcdef0123"}
    [(address, status)] = deploy.calls
    assert address.startswith("203.0.113.") and status == "running"
    assert hcloud_api.servers == {}
    paths = [p for _, p in hcloud_api.requests]
    poweroff = next(i for i, p in enumerate(paths) if p.endswith("/actions/poweroff"))
    snapshot_at = next(i for i, p in enumerate(paths) if p.endswith("/actions/create_image"))
    assert poweroff < snapshot_at
    assert [i.id for i in hcloud_client.images.get_all(label_selector="role=agent-base")] == [
        result.snapshot_id]


def test_failed_deploy_still_deletes_the_temporary_server(hcloud_api, hcloud_client,
                                                          build_config, sleeps):
    with pytest.raises(ImageBuildError, match="deploy failed"):
        build_image(hcloud_client, build_config, deploy=RecordingDeploy(hcloud_api, fail=True),
                    sleep=sleeps)
    assert hcloud_api.servers == {}
    assert [i for i in hcloud_api.images.values() if i["type"] == "snapshot"] == []


def test_server_that_never_runs_times_out_and_is_deleted(hcloud_api, hcloud_client,
                                                         build_config, sleeps, monkeypatch):
    ticks = iter(range(0, 10_000, 100))
    stuck = {"status": "initializing"}
    original = hcloud_api._finish

    def never_running(action):  # the create action succeeds, the server stays initializing
        done = original(action)
        for server in hcloud_api.servers.values():
            server.update(stuck)
        return done

    monkeypatch.setattr(hcloud_api, "_finish", never_running)
    monkeypatch.setattr(hcloud_api, "_settle", lambda rid: None)
    with pytest.raises(ImageBuildError, match="not 'running'"):
        build_image(hcloud_client, build_config, deploy=RecordingDeploy(hcloud_api),
                    sleep=sleeps, clock=lambda: next(ticks))
    assert hcloud_api.servers == {} and sleeps


def test_missing_wheel_creates_no_server(hcloud_api, hcloud_client, build_config):
    from dataclasses import replace

    with pytest.raises(ImageBuildError, match="does not exist"):
        build_image(hcloud_client, replace(build_config, wheel_path="/nope.whl"))
    assert hcloud_api.servers == {} and hcloud_api.requests == []


def test_missing_lock_creates_no_server(hcloud_api, hcloud_client, build_config, tmp_path,
                                        monkeypatch):
    # A checkout without requirements/agent.txt: the deploy could only install bare ranges.
    monkeypatch.setattr("agent_image.image_settings.REQUIREMENTS_DIR", tmp_path / "requirements")

    with pytest.raises(ImageBuildError, match=r"agent\.txt does not exist: run `make lock`"):
        build_image(hcloud_client, build_config)
    assert hcloud_api.servers == {} and hcloud_api.requests == []
