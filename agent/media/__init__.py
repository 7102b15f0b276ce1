"""Attachments made usable by the agent (issue #12): fetched from the control plane's signed
URLs (``fetch``), voice transcribed (``transcribe``, with ``audio`` converting formats), images
as vision blocks (``images``), documents as text (``documents``), and one message's files put
together for the turn (``prepare``)."""

from agent.media.errors import MediaError, TranscriptionError
from agent.media.prepare import MediaPreparer, PreparedMessage

__all__ = ["MediaError", "MediaPreparer", "PreparedMessage", "TranscriptionError"]
