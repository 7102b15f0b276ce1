"""Speech to text behind one interface, ``Transcriber``.

Production: ``WhisperTranscriber``, the OpenAI-compatible ``POST {base}/audio/transcriptions``
(multipart ``file`` + ``model``, answer ``{"text": ...}``;
https://platform.openai.com/docs/api-reference/audio/createTranscription) through the ``openai``
SDK, so OpenAI, Groq, a self-hosted faster-whisper server or the local stand-in
(``standins.openai_api``) all work by ``base_url``.  With no service configured there is no
transcriber (``transcriber_from_config`` returns None) and the turn says so; nothing invents a
transcript.
"""

from __future__ import annotations

import abc

import openai

from agent.media.audio import Upload
from agent.media.errors import TranscriptionError

TIMEOUT = 120.0  # seconds: Whisper takes roughly a tenth of the audio's length, 25 MB ≈ 2 h
RETRIES = 2  # the SDK's retries on 408/409/429/5xx and connection errors, with its backoff


class Transcriber(abc.ABC):
    """Turns recorded speech into text.

    Attributes:
        name: what the service is, for logs (e.g. the model id).
    """

    name: str = ""

    @abc.abstractmethod
    def transcribe(self, upload: Upload) -> str:
        """Return the words spoken in ``upload`` (``""`` when there are none).

        Raises:
            TranscriptionError: the service failed; ``str(exc)`` says why, for the user.
        """


class WhisperTranscriber(Transcriber):
    """The OpenAI-compatible transcription endpoint.

    Args:
        base_url: API root ending in ``/v1`` (e.g. ``https://api.openai.com/v1``).
        api_key: bearer key; keyless servers get a placeholder.
        model: e.g. ``whisper-1`` (OpenAI), ``whisper-large-v3`` (Groq).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, api_key: str = "", model: str = "whisper-1",
                 timeout: float = TIMEOUT):
        self.name = model
        self.model = model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                    timeout=timeout, max_retries=RETRIES)

    def transcribe(self, upload: Upload) -> str:
        """See ``Transcriber.transcribe``."""
        try:
            result = self.client.audio.transcriptions.create(
                model=self.model, file=(upload.filename, upload.data, upload.mime_type))
        except openai.APIStatusError as exc:
            # The SDK's ``body`` is the error object of the OpenAI error shape; its message is
            # the readable part ("Error code: 404 - {...}" is ``exc.message``).
            detail = exc.body.get("message") if isinstance(exc.body, dict) else None
            raise TranscriptionError(f"the transcription service answered {exc.status_code} "
                                     f"({detail or exc.message})") from exc
        except openai.APIConnectionError as exc:
            raise TranscriptionError("the transcription service could not be reached") from exc
        text = getattr(result, "text", "")
        return (text or "").strip()


def transcriber_from_config(config) -> Transcriber | None:
    """Return the configured ``Transcriber``, or None when ``config.transcribe_url`` is empty.

    Args:
        config: an ``agent.config.AgentConfig``.
    """
    if not config.transcribe_url:
        return None
    return WhisperTranscriber(config.transcribe_url, config.transcribe_api_key,
                              config.transcribe_model)
