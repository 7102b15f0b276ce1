"""Images and the LLM backends: Claude gets image blocks, an OpenAI-compatible model gets
``image_url`` parts only when it is configured to see, and the router sends image turns to a
backend that can see — or says that none did."""

from __future__ import annotations

import base64

import pytest
from support.agent_media import png

from agent.config import AgentConfig
from agent.llm import backend_from_config
from agent.llm.anthropic_backend import AnthropicBackend
from agent.llm.base import UNSEEN_IMAGE_NOTE, LLMError, LLMRequest, Notice, TextDelta
from agent.llm.openai_backend import OpenAICompatBackend
from agent.llm.router import Router
from agent.media.images import image_block
from agent.usage import UsageLedger
from standins.anthropic_api import image_blocks
from standins.openai_api import OpenAIStandin


@pytest.fixture
def openai_api():
    with OpenAIStandin() as api:
        yield api


def _photo_message(caption: str = "What colour is this?") -> dict:
    return {"role": "user", "content": [{"type": "text", "text": "[image: photo.png]"},
                                        image_block(png(16, 16), "photo.png"),
                                        {"type": "text", "text": caption}]}


def _run(llm, messages) -> tuple[str, list[str]]:
    """Drain one call: ``(reply text, notices)``."""
    stream = llm.stream(LLMRequest(system="", messages=messages, max_tokens=64))
    text, notices = "", []
    for item in stream:
        if isinstance(item, TextDelta):
            text += item.text
        elif isinstance(item, Notice):
            notices.append(item.text)
    return text, notices


def _router(tmp_path, *backends) -> Router:
    return Router(list(backends), UsageLedger(tmp_path / "usage.db"), "t1", sleep=lambda s: None)


def test_claude_receives_the_image_block_as_the_api_documents_it(standin):
    standin.script(["It is red."])
    assert _run(AnthropicBackend("k", base_url=standin.base_url), [_photo_message()])[0] == "It is red."
    [block] = image_blocks(standin.requests[0]["json"])
    assert block["source"]["media_type"] == "image/png"
    assert base64.b64decode(block["source"]["data"]) == png(16, 16)


def test_the_anthropic_standin_refuses_an_image_whose_type_lies(standin):
    bad = _photo_message()
    bad["content"][1]["source"]["media_type"] = "image/jpeg"
    with pytest.raises(LLMError, match="400"):
        _run(AnthropicBackend("k", base_url=standin.base_url), [bad])


def test_a_vision_configured_openai_model_gets_a_data_url_part(openai_api):
    config = AgentConfig(tenant="t1", llm="openai_compat", openai_base_url=openai_api.base_url,
                         openai_model="qwen2.5-vl", openai_vision=True)
    backend = backend_from_config(config)
    assert backend.supports_images
    _run(backend, [_photo_message()])
    parts = openai_api.requests[0]["json"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_image_turns_go_to_the_backend_that_can_see(tmp_path, standin, openai_api):
    blind = OpenAICompatBackend(openai_api.base_url, model="llama-3.1-8b")
    router = _router(tmp_path, blind, AnthropicBackend("k", base_url=standin.base_url))
    standin.script(["A red square."])
    assert _run(router, [_photo_message()]) == ("A red square.", [])
    assert openai_api.requests == [] and len(image_blocks(standin.requests[0]["json"])) == 1
    openai_api.script(["plain text answer"])
    assert _run(router, [{"role": "user", "content": "hi"}])[0] == "plain text answer"  # text: chain order


def test_a_backend_that_cannot_see_gets_a_note_and_the_user_is_told(tmp_path, openai_api):
    router = _router(tmp_path, OpenAICompatBackend(openai_api.base_url, model="llama-3.1-8b"))
    openai_api.script(["I can only read your words."])
    text, notices = _run(router, [_photo_message()])
    assert text == "I can only read your words."
    assert notices == [("(I can't see images with llama-3.1-8b, so I haven't looked at your "
                        "image; this answer is from your words alone.)")]
    sent = openai_api.requests[0]["json"]["messages"][-1]["content"]
    assert isinstance(sent, str) and UNSEEN_IMAGE_NOTE in sent and "base64" not in sent
