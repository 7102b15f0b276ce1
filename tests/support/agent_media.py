"""Agent media tests: real payloads (PNG, PDF, audio) and a local server answering attachment
URLs the way the control plane's signed media URLs do (a plain GET answering the bytes)."""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import shutil
import struct
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path

from standins.scripted_server import ScriptedServer

FFMPEG = shutil.which("ffmpeg")


def png(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG (8-bit RGB, one colour) of ``width`` × ``height`` pixels, per the PNG spec
    (signature, IHDR, zlib-compressed IDAT of filter-0 scanlines, IEND, CRC-32 per chunk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))


def pdf(pages: list[str], *, password: str | None = None, owner_only: bool = False) -> bytes:
    """A real PDF made with pypdf: one page per string, its text in Helvetica (a text layer
    pypdf extracts); an empty string makes a page with no text (like a scan).  ``password``
    encrypts it (``owner_only``: readable with an empty user password)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        stream = DecodedStreamObject()
        lines = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                 for line in text.splitlines()]
        body = " ".join(f"({line}) Tj 0 -14 Td" for line in lines)
        stream.set_data(f"BT /F1 11 Tf 72 740 Td {body} ET".encode("latin-1") if lines else b"")
        page.replace_contents(stream)
    if password is not None:
        writer.encrypt("" if owner_only else password, password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def audio(seconds: float, container: str = "ogg", codec: str = "libopus") -> bytes:
    """Real audio made by ffmpeg: a 440 Hz tone of ``seconds`` in ``container`` with ``codec``
    (e.g. ``("3gp", "aac")`` for a format the transcription API does not take)."""
    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / f"tone.{container}"
        subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                        "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                        "-ac", "1", "-c:a", codec, str(target)], check=True, timeout=60)
        return target.read_bytes()


class AttachmentServer(ScriptedServer):
    """Serves attachment bytes at ``/media/<n>`` (``add``), as the control plane's signed URLs
    do; ``add(size=…, sha256=…)`` announces other values than the bytes served, and ``stall``
    holds every answer until ``release`` is set (a download that never finishes).

    Attributes:
        gets: request paths received, in order.
    """

    thread_name = "attachment-server"

    def __init__(self):
        super().__init__(responder=lambda body: None)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.gets: list[str] = []
        self.stall = False
        self.release = threading.Event()
        self._ids = itertools.count(1)

    def add(self, data: bytes, *, kind: str, mime_type: str, name: str = "",
            sha256: str | None = None, size: int | None = None) -> dict:
        """Serve ``data`` and return the envelope attachment the control plane would send."""
        path = f"/media/{next(self._ids)}"
        self.files[path] = (data, mime_type)
        return {"kind": kind, "file_id": f"file-{path.rsplit('/', 1)[1]}", "mime_type": mime_type,
                "size": len(data) if size is None else size, "name": name,
                "sha256": sha256 or hashlib.sha256(data).hexdigest(),
                "url": f"{self.base_url}{path}?sig=test"}


class _MediaHandler(http.server.BaseHTTPRequestHandler):
    owner: AttachmentServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Silence the default per-request stderr log."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.owner.gets.append(path)
        if self.owner.stall:
            self.owner.release.wait(30)
        found = self.owner.files.get(path)
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, mime_type = found
        try:
            self.send_response(200)
            self.send_header("Content-Type", mime_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True


AttachmentServer.handler_class = _MediaHandler
