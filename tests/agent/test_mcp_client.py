"""MCP tools through the agent's tool loop, against a real MCP server (``tests/support/mcp_server.py``,
the SDK's ``MCPServer``) over stdio and streamable HTTP, with the Anthropic stand-in as the model."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.turn import TurnRunner
from standins.anthropic_api import text_reply, tool_reply
from wire.protocol import Envelope, new_id

ROOT = Path(__file__).resolve().parents[2]
SERVER = str(ROOT / "tests" / "support" / "mcp_server.py")
ENV_SECRET = "s3cret-env"
HTTP_SECRET = "tok-http-9f8e7d6c5b"


def stdio(**extra) -> dict:
    """An ``mcpServers`` entry launching the test server over stdio with its credential in env."""
    return {"command": sys.executable, "args": [SERVER, "stdio"], "env": {"MCP_TEST_TOKEN": ENV_SECRET},
            **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server():
    """The test server over streamable HTTP on loopback; requests need ``Bearer HTTP_SECRET``."""
    port = _free_port()
    env = {**os.environ, "MCP_TEST_HTTP_TOKEN": HTTP_SECRET}
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("MCP HTTP server did not start")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def servers(**entries) -> str:
    return json.dumps({"mcpServers": entries})


def say(runtime, text: str, chat_id: str = "chat-1") -> str:
    env = Envelope(id=new_id(), tenant="t1", channel="telegram", chat_id=chat_id, sender_id="u1", text=text)
    return TurnRunner(runtime).handle(env)


def tool_results(request: dict) -> list[dict]:
    """The tool_result blocks of the last user message of a Messages API request."""
    content = request["json"]["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def test_stdio_and_http_tools_are_namespaced_filtered_called_and_rediscovered(
        http_server, make_runtime, standin, helpers, caplog):
    caplog.set_level("DEBUG")
    config = servers(local=stdio(excludeTools=["crash"]),
                     remote={"url": http_server, "headers": {"Authorization": f"Bearer {HTTP_SECRET}"},
                             "includeTools": ["add", "learn", "multiply"]})
    runtime = make_runtime(mcp_servers=config)
    standin.script([tool_reply(("local__add", {"a": 2, "b": 3}), ("remote__add", {"a": 40, "b": 2}),
                               ("local__whoami", {}), ("local__leak", {})),
                    text_reply("2+3 is 5 and 40+2 is 42."),
                    tool_reply(("remote__learn", {})), text_reply("learned")])

    assert say(runtime, "add some numbers") == "2+3 is 5 and 40+2 is 42."
    offered = {t["name"]: t for t in standin.requests[0]["json"]["tools"]}
    assert {"calculate", "local__add", "local__echo", "local__create_note", "remote__add",
            "remote__learn"} <= set(offered)
    assert "local__crash" not in offered and "remote__echo" not in offered  # filters
    assert offered["local__add"]["input_schema"]["required"] == ["a", "b"]
    results = tool_results(standin.requests[1])
    assert [r["content"] for r in results] == ["5", "42", "authenticated", "[redacted]"]
    assert not any(r["is_error"] for r in results)

    # tools/list_changed (a subscriptions/listen stream on this 2026-07-28 session) relists.
    assert say(runtime, "learn multiply") == "learned"
    helpers.wait_for(lambda: runtime.registry.get("remote__multiply") is not None, timeout=10)
    standin.script([text_reply("ok")])
    say(runtime, "what can you do now?")
    now_offered = {t["name"] for t in standin.requests[-1]["json"]["tools"]}
    assert "remote__multiply" in now_offered and "local__multiply" not in now_offered

    # Secrets: never in what the model saw, the events, or the logs.
    seen = json.dumps([r["json"] for r in standin.requests])
    events = json.dumps([e.text for e in helpers.all_events(runtime.bus)])
    for secret in (ENV_SECRET, HTTP_SECRET):
        assert secret not in seen and secret not in events and secret not in caplog.text


def test_hung_crashing_and_failing_servers_trip_their_breakers_and_the_turn_goes_on(make_runtime, standin):
    config = servers(hang=stdio(timeout=0.5), crashy=stdio(), failing=stdio())
    runtime = make_runtime(mcp_servers=config, breaker_fail_max=2, breaker_reset=600)
    calls = [("hang__slow", {"seconds": 30}), ("crashy__crash", {}), ("failing__fail", {"reason": "db down"})]
    standin.script([tool_reply(*calls), tool_reply(*calls),
                    tool_reply(("hang__add", {"a": 1, "b": 1}), ("crashy__add", {"a": 1, "b": 1}),
                               ("failing__add", {"a": 1, "b": 1}), ("calculate", {"expression": "6*7"})),
                    text_reply("Some of your tools are down, but 6*7 is 42.")])
    started = time.monotonic()
    assert say(runtime, "try everything") == "Some of your tools are down, but 6*7 is 42."
    first, second, third = (tool_results(standin.requests[i]) for i in (1, 2, 3))
    assert all(r["is_error"] for r in first + second)
    assert "did not answer within 0.5 s" in first[0]["content"]
    assert "connection closed" in first[1]["content"]
    assert "db down" in first[2]["content"]
    assert [r["content"] for r in third[:3]] == [
        "hang is unavailable, try later", "crashy is unavailable, try later",
        "failing is unavailable, try later"]
    assert third[3] == {**third[3], "content": "42", "is_error": False}
    assert time.monotonic() - started < 30
    assert runtime.mcp.status() == dict.fromkeys(
        ("hang", "crashy", "failing"), "unavailable after 2 failures; retried in 600 s")


def test_a_write_tool_asks_first_and_runs_after_yes_or_when_always_allowed(make_runtime, standin, tmp_path):
    runtime = make_runtime(mcp_servers=servers(notes=stdio()))
    standin.script([tool_reply(("notes__create_note", {"title": "Milk"}), text="Sure."),
                    text_reply("Done: the note Milk exists.")])
    question = say(runtime, "note: buy milk")
    assert question.startswith("Sure.") and "notes__create_note" in question and "yes" in question
    assert '"title": "Milk"' in question
    assert len(standin.requests) == 1, "no tool ran and the model was not called again"

    assert say(runtime, "yes") == "Done: the note Milk exists."
    [result] = tool_results(standin.requests[1])
    assert result["content"] == "note created: Milk" and not result["is_error"]

    # A "no" cancels: nothing runs, the model hears the answer.
    standin.script([tool_reply(("notes__create_note", {"title": "Eggs"})), text_reply("Okay, I won't.")])
    say(runtime, "note: eggs")
    assert say(runtime, "no, leave it") == "Okay, I won't."
    assert not tool_results(standin.requests[-1])

    listing = say(runtime, "/tools")
    assert "notes__create_note (notes) asks first" in listing and "notes__add (notes)" in listing
    assert "allowed" in say(runtime, "/tools allow notes__create_note")
    standin.script([tool_reply(("notes__create_note", {"title": "Bread"})), text_reply("Noted.")])
    assert say(runtime, "note: bread") == "Noted."
    assert tool_results(standin.requests[-1])[0]["content"] == "note created: Bread"
    perms = runtime.config.data_path / "tool_permissions.json"
    assert stat.S_IMODE(perms.stat().st_mode) == 0o600


def test_mcp_config_envelope_refreshes_tools_without_restart(make_runtime, standin, helpers):
    runtime = make_runtime()
    assert not [n for n in runtime.registry.names() if "__" in n]
    pushed = {"composio": stdio(writes=["add"])}
    envelope = Envelope(id=new_id(), tenant="t1", channel="web", chat_id="", sender_id="control", text="",
                        kind="mcp_config", mcp_servers=pushed)
    assert Envelope.from_json(envelope.to_json()) == envelope
    TurnRunner(runtime).handle(Envelope.from_json(envelope.to_json()))
    assert runtime.registry.get("composio__add").confirm  # listed in "writes"
    path = runtime.config.data_path / "mcp_servers.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["mcpServers"]["composio"]["env"] == {"MCP_TEST_TOKEN": ENV_SECRET}
    assert standin.requests == [] and helpers.all_events(runtime.bus) == []  # no model call, no reply

    TurnRunner(runtime).handle(Envelope(id=new_id(), tenant="t1", channel="web", chat_id="", sender_id="control",
                                        text="", kind="mcp_config", mcp_servers={}))
    assert runtime.registry.get("composio__add") is None and runtime.mcp.status() == {}

    old = json.dumps({"v": 1, "type": "envelope", "id": "e1", "tenant": "t1", "channel": "web",
                      "chat_id": "c", "sender_id": "u", "text": "hi"})
    parsed = Envelope.from_json(old)
    assert parsed.kind == "message" and parsed.mcp_servers is None


def test_cli_tools_lists_builtins_and_mcp_tools_and_names_a_down_server(tmp_path):
    config = servers(local=stdio(includeTools=["add", "create_note"]),
                     broken={"command": sys.executable, "args": ["-c", "import sys; sys.exit(1)"],
                             "env": {"API_KEY": "broken-s3cret"}, "timeout": 2})
    env = {**os.environ, "HERMES_TENANT": "t1", "HERMES_DATA_DIR": str(tmp_path / "data"),
           "HERMES_LLM": "local", "HERMES_MCP_SERVERS": config}
    out = subprocess.run([sys.executable, "-m", "agent.main", "tools"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:2] == ["calculate", "built-in"] for line in lines)
    assert any(line.split() == ["local__add", "local"] for line in lines)
    assert any(line.split()[:3] == ["local__create_note", "local", "asks"] for line in lines)
    assert any(line.startswith("server broken unavailable:") for line in lines)
    assert "s3cret" not in out.stdout + out.stderr


def test_handshake_era_sessions_relist_on_a_plain_tools_list_changed_notification(tmp_path, helpers):
    from agent.mcp_client.config import spec_from_entry
    from agent.mcp_client.manager import McpManager
    from agent.tools.registry import LayeredRegistry, ToolRegistry

    registry = LayeredRegistry(ToolRegistry())
    manager = McpManager(registry, data_dir=tmp_path, mode="legacy")  # protocol 2025-11-25
    try:
        assert manager.reload({"old": spec_from_entry("old", stdio())}) == {"old": ""}
        assert registry.get("old__multiply") is None
        assert manager.call("old", "learn", {}) == "learned multiply"
        helpers.wait_for(lambda: registry.get("old__multiply") is not None, timeout=10)
        assert manager.call("old", "multiply", {"a": 6, "b": 7}) == "42"
    finally:
        manager.close()
    assert registry.names() == []
