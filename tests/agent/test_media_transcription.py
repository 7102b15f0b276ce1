"""Voice to text: the Whisper API wire format against the stand-in, ffmpeg conversion of formats
the API refuses, the settings that turn transcription on, and what the user sees."""

from __future__ import annotations

import hashlib
import json
import subprocess

import httpx
import pytest
from support.agent_media import FFMPEG, AttachmentServer, audio

from agent.config import AgentConfig
from agent.media import MediaPreparer
from agent.media.audio import API_MAX_BYTES, Upload, for_transcription
from agent.media.errors import MediaError, TranscriptionError
from agent.media.transcribe import WhisperTranscriber, transcriber_from_config
from standins.anthropic_api import error_reply
from standins.openai_api import OpenAIStandin

needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (Debian package) is not installed")


@pytest.fixture
def whisper():
    with OpenAIStandin() as api:
        yield api


@pytest.fixture
def files():
    with AttachmentServer() as server:
        yield server


def _opus_input_rate(data: bytes) -> int:
    """The input sample rate in an Ogg/Opus stream's ``OpusHead`` (RFC 7845 §5.1: magic,
    version, channels, pre-skip, then the rate as 32-bit little-endian); decoders always
    report 48 kHz, so this is where the encoded rate shows."""
    head = data.index(b"OpusHead")
    return int.from_bytes(data[head + 12:head + 16], "little")


def _probe(data: bytes, tmp_path) -> dict:
    path = tmp_path / "probe.bin"
    path.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                          str(path)], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)


@needs_ffmpeg
def test_a_voice_note_is_sent_as_multipart_and_its_transcript_returned(whisper):
    voice = audio(2.0)
    whisper.transcripts[hashlib.sha256(voice).hexdigest()] = "Remind me to call Anna at five."
    text = WhisperTranscriber(whisper.base_url, "sk-test").transcribe(Upload("voice.ogg", voice, "audio/ogg"))
    assert text == "Remind me to call Anna at five."
    [sent] = whisper.transcriptions
    assert sent["fields"]["model"] == "whisper-1" and sent["filename"] == "voice.ogg"
    headers = {name.lower(): value for name, value in sent["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"].startswith("multipart/form-data; boundary=")


def test_the_standin_refuses_what_the_api_refuses(whisper):
    url = f"{whisper.base_url}/audio/transcriptions"
    no_file = httpx.post(url, data={"model": "whisper-1"}, files={"other": ("x", b"1")})
    assert no_file.status_code == 400 and "field required" in no_file.json()["error"]["message"]
    amr = httpx.post(url, data={"model": "whisper-1"}, files={"file": ("voice.amr", b"#!AMR\n", "audio/amr")})
    assert amr.status_code == 400 and amr.json()["error"]["message"].startswith("Invalid file format.")
    fake = httpx.post(url, data={"model": "whisper-1"}, files={"file": ("voice.ogg", b"not audio")})
    assert fake.status_code == 400 and "corrupted" in fake.json()["error"]["message"]
    model = httpx.post(url, data={"model": "gpt-5"}, files={"file": ("v.ogg", b"OggS")})
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"
    big = httpx.post(url, data={"model": "whisper-1"},
                     files={"file": ("v.ogg", b"OggS" + bytes(API_MAX_BYTES))}, timeout=60)
    assert big.status_code == 413


def test_service_errors_become_the_reason_given_to_the_user(whisper):
    with pytest.raises(TranscriptionError, match=r"answered 404 \(The model `nope` does not exist"):
        WhisperTranscriber(whisper.base_url, model="nope").transcribe(Upload("v.ogg", b"OggS", "audio/ogg"))
    with pytest.raises(TranscriptionError, match="could not be reached"):
        WhisperTranscriber("http://127.0.0.1:9/v1", timeout=2).transcribe(Upload("v.ogg", b"OggS", "audio/ogg"))


@needs_ffmpeg
def test_accepted_formats_go_unchanged_and_others_are_converted_to_16khz_mono_opus(tmp_path):
    ogg = audio(1.0)
    same = for_transcription(ogg, "audio/ogg; codecs=opus", "")
    assert same == Upload("voice.ogg", ogg, "audio/ogg")
    three_gp = audio(1.0, "3gp", "aac")
    converted = for_transcription(three_gp, "video/3gpp", "PTT-20261202.3gp")
    assert converted.filename == "PTT-20261202.ogg" and converted.mime_type == "audio/ogg"
    [stream] = _probe(converted.data, tmp_path)["streams"]
    assert (stream["codec_name"], stream["channels"]) == ("opus", 1)
    assert _opus_input_rate(converted.data) == 16000


@needs_ffmpeg
def test_undecodable_audio_and_a_missing_ffmpeg_are_sentences(monkeypatch, tmp_path):
    with pytest.raises(MediaError, match=r"couldn't read the audio in memo\.amr"):
        for_transcription(b"this is not audio at all" * 10, "audio/amr", "memo.amr")
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without the ffmpeg package
    with pytest.raises(MediaError, match="ffmpeg is not installed"):
        for_transcription(b"#!AMR\n", "audio/amr", "memo.amr")


def test_transcription_settings_default_to_the_openai_ones():
    base = {"HERMES_TENANT": "t"}
    assert AgentConfig.from_env(base).transcribe_url == ""
    keyed = AgentConfig.from_env({**base, "OPENAI_API_KEY": "sk-1"})
    assert (keyed.transcribe_url, keyed.transcribe_api_key, keyed.transcribe_model) == (
        "https://api.openai.com/v1", "sk-1", "whisper-1")
    local = AgentConfig.from_env({**base, "OPENAI_BASE_URL": "http://10.0.0.5:8000/v1/"})
    assert local.transcribe_url == "http://10.0.0.5:8000/v1"
    own = AgentConfig.from_env({**base, "OPENAI_API_KEY": "sk-1", "HERMES_TRANSCRIBE_URL": "https://api.groq.com/openai/v1",
                                "HERMES_TRANSCRIBE_API_KEY": "gsk", "HERMES_TRANSCRIBE_MODEL": "whisper-large-v3"})
    assert (own.transcribe_url, own.transcribe_api_key, own.transcribe_model) == (
        "https://api.groq.com/openai/v1", "gsk", "whisper-large-v3")
    assert transcriber_from_config(AgentConfig.from_env(base)) is None


@needs_ffmpeg
def test_the_reply_starts_with_the_transcript_and_the_model_gets_the_words(whisper, files):
    voice = audio(1.5)
    whisper.transcripts[hashlib.sha256(voice).hexdigest()] = "What's the weather tomorrow?"
    note = files.add(voice, kind="voice", mime_type="audio/ogg", name="")
    preparer = MediaPreparer(transcriber=WhisperTranscriber(whisper.base_url), max_bytes=1 << 20,
                             document_chars=1000)
    message = preparer.prepare("", [note])
    assert message.preface == "🎙️ “What's the weather tomorrow?”"
    assert message.content() == "What's the weather tomorrow?"
    assert message.summary == "[voice message] What's the weather tomorrow?"


def test_without_a_transcription_service_the_user_learns_which_setting_enables_it(files):
    note = files.add(b"OggS" + bytes(100), kind="voice", mime_type="audio/ogg")
    message = MediaPreparer(transcriber=None, max_bytes=1 << 20, document_chars=1000).prepare("", [note])
    assert "no transcription service" in message.preface and "HERMES_TRANSCRIBE_API_KEY" in message.preface
    assert not message.needs_model and files.gets == []  # nothing downloaded, nothing invented


@needs_ffmpeg
def test_a_failing_transcription_service_is_named_and_the_caption_still_answered(whisper, files):
    whisper.script_transcriptions([error_reply(503, "overloaded")] * 3)  # the first try + 2 retries
    note = files.add(audio(1.0), kind="voice", mime_type="audio/ogg", name="voice.ogg")
    preparer = MediaPreparer(transcriber=WhisperTranscriber(whisper.base_url), max_bytes=1 << 20,
                             document_chars=1000)
    message = preparer.prepare("see attached", [note])
    assert message.shown == [("I couldn't transcribe voice.ogg: the transcription service "
                              "answered 503 (overloaded).")]
    assert message.needs_model and message.caption == "see attached"
