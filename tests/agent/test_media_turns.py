"""Attachments end to end through the real agent turn: a voice note transcribed and answered
(through the inbox listener and a Huey consumer), a photo seen by Claude, a photo the local
model cannot see, a PDF read, and files the control plane could not keep."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import signal
import threading
from pathlib import Path

import pytest
from support.agent_media import FFMPEG, AttachmentServer, audio, pdf, png

from agent.history import History
from agent.listener import InboxListener
from agent.tasks import AgentTasks
from agent.turn import TurnRunner
from standins.anthropic_api import image_blocks, last_user_text, text_reply
from standins.openai_api import OpenAIStandin
from wire.protocol import messages_stream

REALDATA = Path(__file__).resolve().parents[2] / "standins" / "payloads"
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (Debian package) is not installed")


@pytest.fixture
def files():
    with AttachmentServer() as server:
        yield server


@pytest.fixture
def whisper():
    with OpenAIStandin() as api:
        yield api


@pytest.fixture
def listening(make_runtime):
    """``runtime`` with the inbox listener in a thread and a real Huey consumer."""
    started = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def start(**overrides):
        runtime = make_runtime(**overrides)
        tasks = AgentTasks(runtime)
        consumer = tasks.huey.create_consumer(workers=1, periodic=False, check_worker_health=False,
                                              initial_delay=0.02, max_delay=0.1)
        consumer.start()
        listener = InboxListener(runtime, tasks)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        started.append((consumer, listener, thread))
        return runtime

    yield start
    for consumer, listener, thread in started:
        listener.stop()
        thread.join(5)
        consumer.stop(graceful=True)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _with(env, *attachments, text: str | None = None):
    return dataclasses.replace(env, attachments=list(attachments),
                               text=env.text if text is None else text)


def _telegram(name: str) -> dict:
    return json.loads((REALDATA / "telegram" / name).read_text())["message"]


def _history(runtime) -> list[dict]:
    return runtime.history.recent(History.chat_key("telegram", "chat-1"), 10)


@needs_ffmpeg
def test_a_voice_note_is_transcribed_shown_first_and_answered(listening, standin, whisper, files, helpers):
    runtime = listening(transcribe_url=whisper.base_url, transcribe_api_key="sk-test")
    voice = _telegram("update_voice.json")["voice"]  # what Telegram says about a voice note
    recording = audio(3.0)
    whisper.transcripts[hashlib.sha256(recording).hexdigest()] = "Add milk and eggs to my shopping list."
    standin.script(["Done: milk and eggs are on your shopping list."])
    note = files.add(recording, kind="voice", mime_type=voice["mime_type"])
    env = _with(helpers.envelope(""), note, text="")
    runtime.bus.append(messages_stream("t1"), env.to_json(), idempotency_key=env.id)

    [final] = helpers.wait_for(lambda: [e for e in helpers.events_for(runtime.bus, env.id) if e.kind == "final"])
    deltas = [e.text for e in helpers.events_for(runtime.bus, env.id) if e.kind == "delta"]
    assert deltas and all(final.text.startswith(d) for d in deltas)  # the transcript stays on top
    first, answer = final.text.split("\n\n", 1)
    assert first == "🎙️ “Add milk and eggs to my shopping list.”"
    assert answer == "Done: milk and eggs are on your shopping list."
    assert last_user_text(standin.requests[0]["json"]) == "Add milk and eggs to my shopping list."
    assert whisper.transcriptions[0]["filename"] == "voice.ogg"
    assert _history(runtime)[0]["content"] == "[voice message] Add milk and eggs to my shopping list."


@needs_ffmpeg
def test_a_whatsapp_3gp_voice_note_is_converted_before_transcription(make_runtime, standin, whisper, files, helpers):
    runtime = make_runtime(transcribe_url=whisper.base_url)
    standin.script(["Sure."])
    memo = files.add(audio(2.0, "3gp", "aac"), kind="voice", mime_type="audio/3gpp", name="PTT-0001.3gp")
    reply = TurnRunner(runtime).handle(_with(helpers.envelope(""), memo, text=""))
    assert reply == "🎙️ “This is a voice note.”\n\nSure."
    sent = whisper.transcriptions[0]
    assert sent["filename"] == "PTT-0001.ogg" and sent["content_type"] == "audio/ogg"


def test_a_voice_note_without_a_transcription_service_gets_an_honest_reply(make_runtime, standin, files, helpers):
    runtime = make_runtime()  # the embedded default: no transcription keys
    note = files.add(b"OggS" + bytes(200), kind="voice", mime_type="audio/ogg")
    env = _with(helpers.envelope(""), note, text="")
    reply = TurnRunner(runtime).handle(env)
    assert "can't listen to voice notes" in reply and "HERMES_TRANSCRIBE_API_KEY" in reply
    assert standin.requests == []  # no model call, no invented transcript
    assert helpers.events_for(runtime.bus, env.id)[-1].text == reply


def test_a_photo_without_caption_reaches_claude_as_an_image_block(make_runtime, standin, files, helpers):
    runtime = make_runtime()
    sizes = _telegram("update_photo_caption.json")["photo"]  # Telegram's sizes; the largest is sent
    photo = png(96, 128, (30, 120, 220))
    standin.script(["A blue rectangle."])
    attachment = files.add(photo, kind="image", mime_type="image/png", name="photo.png")
    attachment["file_id"] = sizes[-1]["file_id"]
    reply = TurnRunner(runtime).handle(_with(helpers.envelope(""), attachment, text=""))
    assert reply == "A blue rectangle."
    [block] = image_blocks(standin.requests[0]["json"])
    assert base64.b64decode(block["source"]["data"]) == photo
    assert [h["content"] for h in _history(runtime)] == ["[image: photo.png]", "A blue rectangle."]


def test_the_local_model_says_it_cannot_see_and_answers_the_words(make_runtime, files, helpers):
    from agent.llm.local_backend import LocalBackend

    runtime = make_runtime(backends=[LocalBackend()], max_tokens=24)
    photo = files.add(png(32, 32), kind="image", mime_type="image/png", name="cat.png")
    reply = TurnRunner(runtime).handle(_with(helpers.envelope("Say hello."), photo))
    notice, answer = reply.split("\n\n", 1)
    assert notice.startswith("(I can't see images with ") and "SmolLM2" in notice
    assert answer.strip()  # the local model still answered the text

    alone = files.add(png(32, 32), kind="image", mime_type="image/png", name="dog.png")
    reply = TurnRunner(runtime).handle(_with(helpers.envelope(""), alone, text=""))
    assert reply.startswith("I can't see images with ") and "Describe it in words" in reply


def test_a_pdf_is_read_into_the_turn(make_runtime, standin, files, helpers):
    runtime = make_runtime()
    doc = _telegram("update_document.json")["document"]
    contract = pdf(["Rental agreement", "The monthly rent is 950 EUR, due on the 3rd."])
    standin.script(["The rent is 950 EUR a month."])
    attachment = files.add(contract, kind="document", mime_type=doc["mime_type"], name=doc["file_name"])
    reply = TurnRunner(runtime).handle(_with(helpers.envelope("How much is the rent?"), attachment))
    assert reply == "The rent is 950 EUR a month."
    seen = last_user_text(standin.requests[0]["json"])
    assert seen.startswith("How much is the rent?")
    assert '<document name="document.pdf" pages="2">' in seen and "950 EUR, due on the 3rd" in seen
    assert _history(runtime)[0]["content"] == "How much is the rent?\n[document: document.pdf, 2 pages]"


def test_a_file_too_large_is_explained_and_the_rest_answered(make_runtime, standin, helpers):
    runtime = make_runtime()
    too_large = {"kind": "voice", "file_id": "AwACAgIAAxkBAAI", "name": "voice.ogg", "error": "too_large",
                 "size": 30 * 1024 * 1024, "limit": 20 * 1024 * 1024, "mime_type": "audio/ogg"}
    standin.script([text_reply("Paris is the capital of France.")])
    reply = TurnRunner(runtime).handle(_with(helpers.envelope("And what's the capital of France?"), too_large))
    assert reply == ("voice.ogg is 30 MB; the limit is 20 MB, so I didn't receive it.\n\n"
                     "Paris is the capital of France.")

    alone = TurnRunner(runtime).handle(_with(helpers.envelope(""), too_large, text=""))
    assert alone == "voice.ogg is 30 MB; the limit is 20 MB, so I didn't receive it."
    assert len(standin.requests) == 1  # nothing else to answer: no second model call
