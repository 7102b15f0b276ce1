"""The LLM gateway (issue #19, finding 4): agents reach Anthropic, the OpenAI-compatible server
and transcription only through the control plane, with their own revocable token; the
operator's keys never reach a VM.  Served over real HTTP, called with the official SDKs, in
front of local stand-ins that speak the providers' wire formats."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
import yaml
from support.live_app import live_app
from support.serve import wait_until

from control.models import LlmCall, Machine, Tenant, utcnow
from control.providers.base import MachineSpec, MachineStatus, ServerState
from control.providers.hetzner.config import HetznerConfig
from control.services import llm_gateway, provisioning
from control.settings import Settings
from infra import tenant_config as tc
from standins.anthropic_api import AnthropicStandin, text_reply
from standins.openai_api import OpenAIStandin
from standins.openai_api import text_reply as openai_reply
from wire.pricing import cost_cents

ANTHROPIC_KEY = "sk-ant-operator-only-5c1e"
OPENAI_KEY = "sk-or-operator-only-77aa"
WHISPER_KEY = "sk-whisper-operator-only-90b2"
VOICE = b"OggS" + bytes(64)


@pytest.fixture(scope="module")
def claude():
    with AnthropicStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def openai_api():
    with OpenAIStandin() as standin:
        yield standin


@pytest.fixture
def gateway(tmp_path, claude, openai_api):
    """The control app on a real 127.0.0.1 port; yields ``(public_url, runtime)``."""
    def settings_for(public_url: str) -> Settings:
        return Settings(data_dir=str(tmp_path / "data"), public_url=public_url,
                        llm_anthropic_api_key=ANTHROPIC_KEY, llm_anthropic_url=claude.base_url,
                        llm_openai_url=openai_api.base_url, llm_openai_api_key=OPENAI_KEY,
                        llm_transcribe_url=openai_api.base_url, llm_transcribe_api_key=WHISPER_KEY,
                        plan_budget_cents={"light": 2, "heavy": 150},
                        llm_plan_models={"light": ("claude-haiku-4-5", "qwen/qwen3-8b", "whisper-1")},
                        agent_env={"HERMES_OPENAI_MODEL": "qwen/qwen3-8b"})

    with live_app(settings_for) as served:
        yield served


def tenant(runtime, plan="light", **fields) -> tuple[Tenant, str]:
    with runtime.db.connection_context():
        row = Tenant.create(email=f"{plan}-{utcnow().timestamp()}@example.com", plan=plan,
                            status="active", **fields)
        return row, llm_gateway.issue(row.id)


def calls(runtime, row) -> list[LlmCall]:
    with runtime.db.connection_context():
        return list(LlmCall.select().where(LlmCall.tenant == row.id).order_by(LlmCall.id))


def metered(runtime, row) -> list[LlmCall]:
    """The tenant's rows once the stream's last step has written its row: the client sees the
    end of the stream before the gateway's generator finishes."""
    return wait_until(lambda: calls(runtime, row), 10, "the streamed call's row")


def lower(headers: dict) -> dict:
    return {name.lower(): value for name, value in headers.items()}


def claude_client(url, token):
    return anthropic.Anthropic(api_key=token, base_url=url + llm_gateway.ANTHROPIC_PATH, max_retries=0)


def openai_client(url, token):
    return openai.OpenAI(api_key=token, base_url=url + llm_gateway.OPENAI_PATH, max_retries=0)


def test_anthropic_stream_passes_through_with_the_operator_key_and_is_metered(gateway, claude):
    url, runtime = gateway
    row, token = tenant(runtime)
    claude.script([text_reply("Hello from Claude, streamed.", input_tokens=1200, output_tokens=40)])
    with claude_client(url, token).messages.stream(
            model="claude-haiku-4-5", max_tokens=100,
            messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from Claude, streamed." and final.usage.output_tokens == 40
    sent = claude.requests[-1]["headers"]
    assert sent["x-api-key"] == ANTHROPIC_KEY and token not in str(sent)
    (call,) = metered(runtime, row)
    assert (call.api, call.model, call.status, call.input_tokens, call.output_tokens) == (
        "anthropic", "claude-haiku-4-5", 200, 1200, 40)
    assert call.cost_cents == pytest.approx(cost_cents("claude-haiku-4-5", 1200, 40))


def test_openai_stream_is_metered_from_the_usage_chunk_the_gateway_asks_for(gateway, openai_api):
    url, runtime = gateway
    row, token = tenant(runtime)
    openai_api.script([openai_reply("Hi from the open model.", input_tokens=90, output_tokens=12)])
    chunks = list(openai_client(url, token).chat.completions.create(
        model="qwen/qwen3-8b", stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hi from the open model.")
    assert lower(openai_api.requests[-1]["headers"])["authorization"] == f"Bearer {OPENAI_KEY}"
    assert openai_api.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    (call,) = metered(runtime, row)
    assert (call.api, call.model, call.input_tokens, call.output_tokens) == (
        "openai", "qwen/qwen3-8b", 90, 12)


def test_voice_notes_are_transcribed_through_the_gateway(gateway, openai_api):
    url, runtime = gateway
    row, token = tenant(runtime)
    result = openai_client(url, token).audio.transcriptions.create(
        model="whisper-1", file=("voice.ogg", VOICE, "audio/ogg"))
    assert result.text == openai_api.default_transcript
    sent = openai_api.transcriptions[-1]
    assert lower(sent["headers"])["authorization"] == f"Bearer {WHISPER_KEY}"
    assert sent["size"] == len(VOICE) and sent["fields"]["model"] == "whisper-1"
    assert [c.api for c in calls(runtime, row)] == ["transcription"]


def test_a_missing_wrong_replaced_or_paused_token_gets_401_and_nothing_is_forwarded(
        gateway, claude, openai_api):
    url, runtime = gateway
    row, old = tenant(runtime)
    with runtime.db.connection_context():
        new = llm_gateway.issue(row.id)  # reprovisioned: the old VM's token is dead
        _, paused_token = tenant(runtime, paused_at=utcnow())
    before = (len(claude.requests), len(openai_api.requests))
    for token in ("", "not-a-token", old, paused_token):
        with pytest.raises(anthropic.AuthenticationError) as refused:
            claude_client(url, token or "x").messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError) as refused_openai:
            openai_client(url, token or "x").chat.completions.create(
                model="qwen/qwen3-8b", messages=[{"role": "user", "content": "hi"}])
        assert refused_openai.value.code == "invalid_api_key"
    bare = httpx.post(url + "/llm/anthropic/v1/messages", json={"model": "claude-haiku-4-5"})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert (len(claude.requests), len(openai_api.requests)) == before
    claude.script([text_reply("still works")])
    assert claude_client(url, new).messages.create(
        model="claude-haiku-4-5", max_tokens=10,
        messages=[{"role": "user", "content": "hi"}]).content[0].text == "still works"


def test_once_the_budget_is_spent_the_next_call_gets_429_without_reaching_the_provider(
        gateway, claude):
    url, runtime = gateway
    _, token = tenant(runtime)  # light: 2 cents a day here
    client = claude_client(url, token)
    # 30,000 input tokens of Haiku 4.5 at 100 cents/MTok: 3 cents, over the 2-cent budget.
    claude.script([text_reply("an expensive answer", input_tokens=30_000, output_tokens=10)])
    client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                           messages=[{"role": "user", "content": "hi"}])
    sent = len(claude.requests)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                               messages=[{"role": "user", "content": "again"}])
    error = refused.value.body["error"]
    assert error["type"] == "rate_limit_error"
    assert "budget" in error["message"] and "00:00 UTC" in error["message"]
    assert len(claude.requests) == sent
    with pytest.raises(openai.RateLimitError) as refused_openai:
        openai_client(url, token).audio.transcriptions.create(
            model="whisper-1", file=("voice.ogg", VOICE, "audio/ogg"))
    assert refused_openai.value.code == "insufficient_quota"
    _, other_token = tenant(runtime)  # another tenant's budget is its own
    claude.script([text_reply("yours")])
    assert claude_client(url, other_token).messages.create(
        model="claude-haiku-4-5", max_tokens=10,
        messages=[{"role": "user", "content": "hi"}]).content[0].text == "yours"


def test_a_model_outside_the_plan_is_refused_in_the_providers_format(gateway, claude, openai_api):
    url, runtime = gateway
    _, token = tenant(runtime)
    before = (len(claude.requests), len(openai_api.requests))
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude_client(url, token).messages.create(
            model="claude-sonnet-5-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "permission_error"
    with pytest.raises(openai.PermissionDeniedError) as refused_openai:
        openai_client(url, token).chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert refused_openai.value.code == "model_not_allowed"
    assert (len(claude.requests), len(openai_api.requests)) == before
    _, heavy_token = tenant(runtime, plan="heavy")  # heavy: every priced model
    claude.script([text_reply("opus here")])
    assert claude_client(url, heavy_token).messages.create(
        model="claude-sonnet-5-5", max_tokens=10,
        messages=[{"role": "user", "content": "hi"}]).content[0].text == "opus here"


@pytest.mark.parametrize(("path", "body"), [
    ("/llm/anthropic/v1/messages", b"not json"),
    ("/llm/anthropic/v1/messages", b"[1, 2]"),
    ("/llm/anthropic/v1/messages", b'{"model": 7}'),
    ("/llm/openai/v1/chat/completions", b"{}"),
    ("/llm/openai/v1/audio/transcriptions", b"--x--"),
])
def test_malformed_requests_get_a_400_in_the_providers_format(gateway, path, body):
    url, runtime = gateway
    _, token = tenant(runtime)
    answer = httpx.post(url + path, content=body, headers={
        "x-api-key": token, "content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_an_unreachable_provider_is_a_502_the_agent_fails_over_from(gateway):
    url, runtime = gateway
    row, token = tenant(runtime)
    runtime.settings = runtime.settings.with_overrides(llm_anthropic_url="http://127.0.0.1:9")
    with pytest.raises(anthropic.InternalServerError) as refused:
        claude_client(url, token).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502
    assert [(c.status, c.cost_cents) for c in calls(runtime, row)] == [(502, 0.0)]


class RecordingProvisioner:
    """Keeps the ``MachineSpec`` it was asked for (a stand-in for the cloud)."""

    def __init__(self):
        self.specs: list[MachineSpec] = []

    def provision(self, spec: MachineSpec) -> MachineStatus:
        self.specs.append(spec)
        return MachineStatus(tenant=spec.tenant, state=ServerState.RUNNING, address="10.0.0.9")


def test_a_tenant_vm_gets_the_gateway_and_its_own_token_never_an_operator_key(gateway, claude):
    url, runtime = gateway
    row, _ = tenant(runtime)
    cloud = RecordingProvisioner()
    with runtime.db.connection_context():
        Machine.create(tenant=row, plan="light", state="requested")
        provisioning.run_provisioning(row.id, cloud, runtime.agent_env(), link_ttl=60)
    (spec,) = cloud.specs
    config = HetznerConfig(env="test", hcloud_token="t", snapshot_id="1", network_id="2",
                           firewall_label="fw=test", control_url=url,
                           pulumi_backend_url="file:///tmp/x", pulumi_passphrase="p",
                           image_llm_backends=("anthropic", "openai_compat"))
    entries = config.tenant_config(spec.tenant, spec.env)
    user_data = tc.render_cloud_init(spec.tenant, {k: e.value for k, e in entries.items()})
    for operator_key in (ANTHROPIC_KEY, OPENAI_KEY, WHISPER_KEY):
        assert operator_key not in user_data
    env_file = yaml.safe_load(user_data)["write_files"][0]["content"]
    assert f'ANTHROPIC_BASE_URL="{url}/llm/anthropic"' in env_file
    token = spec.env["ANTHROPIC_API_KEY"]
    assert spec.env["OPENAI_API_KEY"] == spec.env["HERMES_TRANSCRIBE_API_KEY"] == token
    claude.script([text_reply("the VM's token works")])
    assert claude_client(url, token).messages.create(
        model="claude-haiku-4-5", max_tokens=10,
        messages=[{"role": "user", "content": "hi"}]).content[0].text == "the VM's token works"
    with runtime.db.connection_context():
        provisioning.run_deprovisioning(row.id, _Gone())
    with pytest.raises(anthropic.AuthenticationError):
        claude_client(url, token).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


class _Gone:
    def deprovision(self, tenant: str, archive: bool = True):
        return None
