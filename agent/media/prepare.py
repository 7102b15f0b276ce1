"""One message's attachments turned into what the model reads, what history keeps and what the
reply shows first.

Per attachment (the contract in ``wire.protocol.Envelope``), dispatched on its ``kind``:

* ``error`` set by the control plane (``too_large``, ``unsupported``, ``unavailable``) → a line
  in the reply saying what happened to that file;
* ``voice``/``audio`` → downloaded, converted if needed, transcribed: the transcript is the
  user's words for the model and the reply's first line shows it (``🎙️ “…”``);
* ``image`` (and stickers that are images) → an image content block for a model that can see;
* ``document``/``file`` → by type: PDF or text → its text in the user turn (capped), an image
  or audio file → as above;
* ``video`` → a line: not watched;
* items without ``url`` or ``error`` (older control planes) are ignored.

Nothing here raises for a bad file: each failure becomes one sentence for the user and a short
note for the model, and the rest of the message is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from agent.media import audio, documents, images
from agent.media.errors import MediaError, TranscriptionError, human_size, label
from agent.media.fetch import DEFAULT_TIMEOUT, fetch
from agent.media.transcribe import Transcriber, transcriber_from_config

log = logging.getLogger(__name__)

VOICE_MARK = "🎙️"
NO_TRANSCRIBER = (f"{VOICE_MARK} I can't listen to voice notes yet: no transcription service is set "
                  "up for me. Setting HERMES_TRANSCRIBE_API_KEY (or OPENAI_API_KEY) on the agent "
                  "turns them on.")
SHOWN_TRANSCRIPT_CHARS = 1000  # the reply's first line quotes at most this much of a transcript


@dataclass
class PreparedMessage:
    """The user's message with its attachments made usable.

    Attributes:
        caption: the message text (or media caption) as sent.
        spoken: transcripts of voice notes and audio files, in order.
        documents: document texts, each wrapped in ``<document name=…>`` tags.
        notes: notes for the model about files that could not be used (the user is told).
        images: content blocks, a ``[image: name]`` text block before each image block.
        shown: lines the reply starts with (transcripts, problems with files).
        described: short descriptions for history and memory (``[image: photo.jpg]``…).
        document_chars: characters of document text taken so far (against the cap).
    """

    caption: str = ""
    spoken: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    described: list[str] = field(default_factory=list)
    document_chars: int = 0

    @property
    def text(self) -> str:
        """What the model reads as the user's words: caption, transcripts, documents, notes."""
        return "\n\n".join(p for p in (self.caption, *self.spoken, *self.documents, *self.notes) if p)

    @property
    def summary(self) -> str:
        """The message as history and memory keep it: words and transcripts, files by name only."""
        return "\n".join(p for p in (self.caption, *self.described) if p)

    @property
    def preface(self) -> str:
        """The reply's first lines (``""`` when there is nothing to show)."""
        return "\n".join(self.shown)

    @property
    def image_count(self) -> int:
        """How many images the model is sent."""
        return sum(1 for block in self.images if block["type"] == "image")

    @property
    def has_words(self) -> bool:
        """True when the message has words besides images: text, a transcript or a document."""
        return bool(self.caption.strip() or self.spoken or self.documents)

    @property
    def needs_model(self) -> bool:
        """False when nothing is left for the model: no words, transcript, document or image
        (e.g. only a file that could not be used, which the reply's first lines explain)."""
        return bool(self.has_words or self.images)

    def content(self) -> str | list[dict]:
        """The user message's content: the text, or image blocks followed by the text (images
        first, as Anthropic's vision guide advises)."""
        if not self.images:
            return self.text
        return [*self.images, *([{"type": "text", "text": self.text}] if self.text else [])]


class MediaPreparer:
    """Turns an envelope's text and attachments into a ``PreparedMessage``.

    Args:
        transcriber: a ``Transcriber``, or None when no transcription service is configured.
        max_bytes: the largest file downloaded (``HERMES_AGENT_MEDIA_MAX_BYTES``).
        document_chars: characters of document text per message (``HERMES_DOCUMENT_MAX_CHARS``).
        timeout: seconds per download.
        client: an ``httpx.Client`` for downloads (default: one per preparer).
    """

    def __init__(self, *, transcriber: Transcriber | None, max_bytes: int, document_chars: int,
                 timeout: float = DEFAULT_TIMEOUT, client: httpx.Client | None = None):
        self.transcriber = transcriber
        self.max_bytes = max_bytes
        self.document_chars = document_chars
        self.timeout = timeout
        self.client = client or httpx.Client(follow_redirects=True)
        self._handlers: dict[str, Callable[[dict, PreparedMessage], None]] = {
            "voice": self._voice, "audio": self._voice, "image": self._image,
            "sticker": self._sticker, "document": self._document, "file": self._document,
            "video": self._video,
        }

    @classmethod
    def from_config(cls, config, *, document_chars: int | None = None) -> MediaPreparer:
        """Return a preparer from an ``agent.config.AgentConfig``; ``document_chars`` lowers
        the document cap (e.g. to fit a small model's window)."""
        chars = config.document_max_chars
        return cls(transcriber=transcriber_from_config(config), max_bytes=config.media_max_bytes,
                   document_chars=min(chars, document_chars) if document_chars else chars)

    def prepare(self, text: str, attachments: list[dict]) -> PreparedMessage:
        """Return ``text`` and ``attachments`` (``Envelope.attachments``) made usable."""
        message = PreparedMessage(caption=text or "")
        for attachment in attachments:
            if attachment.get("error"):
                self._refused(attachment, message)
            elif attachment.get("url"):
                handler = self._handlers.get(attachment.get("kind", ""), self._document)
                try:
                    handler(attachment, message)
                except MediaError as exc:
                    self._failed(attachment, str(exc), message)
                except Exception:  # one odd file must not cost the user the reply
                    log.exception("attachment %s failed unexpectedly", attachment.get("file_id"))
                    self._failed(attachment, f"Something went wrong while I opened "
                                 f"{label(attachment)}, so I skipped it.", message)
        return message

    def _fetch(self, attachment: dict) -> bytes:
        return fetch(attachment, max_bytes=self.max_bytes, timeout=self.timeout, client=self.client)

    def _voice(self, attachment: dict, message: PreparedMessage) -> None:
        if self.transcriber is None:
            if NO_TRANSCRIBER not in message.shown:
                message.shown.append(NO_TRANSCRIBER)
            message.notes.append(f"[The user sent a voice message ({label(attachment)}) that could "
                                 "not be transcribed: no transcription service is configured. "
                                 "They have been told.]")
            message.described.append(f"[voice message: {label(attachment)}, not transcribed]")
            return
        upload = audio.for_transcription(self._fetch(attachment), attachment.get("mime_type", ""),
                                         attachment.get("name", ""))
        started = time.monotonic()
        try:
            spoken = self.transcriber.transcribe(upload)
        except TranscriptionError as exc:
            raise MediaError(f"I couldn't transcribe {label(attachment)}: {exc}.") from exc
        log.info("transcribed %s (%d bytes) in %.0f ms: %d characters", upload.filename,
                 len(upload.data), (time.monotonic() - started) * 1000, len(spoken))
        if not spoken:
            message.shown.append(f"{VOICE_MARK} (I couldn't make out any words in "
                                 f"{label(attachment)}.)")
            message.described.append(f"[voice message: {label(attachment)}, no words]")
            return
        quoted = spoken if len(spoken) <= SHOWN_TRANSCRIPT_CHARS else \
            spoken[:SHOWN_TRANSCRIPT_CHARS].rstrip() + "…"
        message.shown.append(f"{VOICE_MARK} “{quoted}”")
        message.spoken.append(spoken)
        message.described.append(f"[voice message] {spoken}")

    def _image(self, attachment: dict, message: PreparedMessage) -> None:
        name = attachment.get("name") or "photo"
        if message.image_count >= images.MAX_IMAGES:
            raise MediaError(f"I looked at the first {images.MAX_IMAGES} images only; "
                             f"{label(attachment)} was one too many.")
        block = images.image_block(self._fetch(attachment), label(attachment))
        message.images += [{"type": "text", "text": f"[image: {name}]"}, block]
        message.described.append(f"[image: {name}]")

    def _sticker(self, attachment: dict, message: PreparedMessage) -> None:
        try:
            self._image(attachment, message)
        except MediaError:  # animated stickers (TGS, WebM): the gesture is enough
            message.notes.append("[The user sent a sticker.]")
            message.described.append("[sticker]")

    def _document(self, attachment: dict, message: PreparedMessage) -> None:
        mime, name = attachment.get("mime_type", ""), attachment.get("name", "")
        family = mime.split("/")[0].lower()
        if family == "image":
            self._image(attachment, message)
        elif family == "audio":
            self._voice(attachment, message)
        elif documents.is_pdf(mime, name) or documents.is_text(mime, name):
            self._read(attachment, message)
        else:
            raise MediaError(f"I can't read {label(attachment)} ({mime or 'unknown type'}): I read "
                             "PDFs and text files, and look at images.")

    def _read(self, attachment: dict, message: PreparedMessage) -> None:
        name = attachment.get("name") or "document"
        room = max(0, self.document_chars - message.document_chars)
        if room == 0:
            raise MediaError(f"I didn't read {label(attachment)}: this message's documents already "
                             f"fill the {self.document_chars:,} characters I read at once.")
        doc = documents.extract(self._fetch(attachment), attachment.get("mime_type", ""),
                                label(attachment), room)
        message.document_chars += len(doc.text)
        safe = name.replace('"', "'")
        pages = f' pages="{doc.pages}"' if doc.pages is not None else ""
        cut = (f"\n[Only the first {len(doc.text):,} characters of this document are included; "
               "the rest was cut off.]") if doc.truncated else ""
        message.documents.append(f'<document name="{safe}"{pages}>\n{doc.text}{cut}\n</document>')
        detail = f", {doc.pages} pages" if doc.pages is not None else ""
        message.described.append(f"[document: {name}{detail}]")

    def _video(self, attachment: dict, message: PreparedMessage) -> None:
        raise MediaError(f"I can't watch videos yet, so I haven't seen {label(attachment)}.")

    def _refused(self, attachment: dict, message: PreparedMessage) -> None:
        """A file the control plane did not keep (``too_large``, ``unsupported``, ``unavailable``)."""
        name, error = label(attachment), attachment.get("error")
        if error == "too_large" and attachment.get("size") and attachment.get("limit"):
            line = (f"{name} is {human_size(attachment['size'])}; the limit is "
                    f"{human_size(attachment['limit'])}, so I didn't receive it.")
        elif error == "too_large":
            line = f"{name} is larger than I can receive."
        elif error == "unsupported":
            kind = attachment.get("mime_type") or "this type of file"
            line = f"I can't open {name}: {kind} isn't a file type I accept."
        else:
            line = f"I couldn't get {name} from the chat app; please send it again."
        self._failed(attachment, line, message)

    @staticmethod
    def _failed(attachment: dict, line: str, message: PreparedMessage) -> None:
        log.info("attachment %s (%s) not used: %s", attachment.get("file_id", "?"),
                 attachment.get("kind", "?"), line)
        message.shown.append(line)
        message.notes.append(f"[The user also sent {label(attachment)}, which could not be used; "
                             f"they were told: {line}]")
        message.described.append(f"[{attachment.get('kind', 'file')} not received: {label(attachment)}]")
