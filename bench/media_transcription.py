"""Media benchmark (issue 12): the agent's own overhead per voice note and per PDF.

    python bench/media_transcription.py [--runs 30] [--pdf-runs 20]

Voice notes of 10 s and 60 s (a real tone made by ffmpeg) go through the agent's path
(``agent.media``): download from a local server answering like the control plane's signed URL
(``fetch``, sha256 checked), conversion where the format needs it (``audio.for_transcription``:
ffmpeg to 16 kHz mono Ogg/Opus) and the multipart round trip to the Whisper API stand-in
(``standins.openai_api``, which answers at once — so the figures are our overhead, not a
model's transcription time).  Two inputs per length: ``ogg_opus`` (Telegram and WhatsApp voice
notes: sent as they are) and ``3gp_aac`` (older phones' recordings: converted first).  Per case,
p50/p99 of the total and the p50 of each stage, in milliseconds.

PDF: text extraction (``documents.pdf_text``, pypdf) of a 20-page PDF of about 3,000
characters a page, whole and at the default cap of 40,000 characters; p50/p99 in ms.

Needs ffmpeg (Debian package) and the agent extra.  Prints one JSON object (the last line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):  # tests/support holds the payload makers the tests use
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx
from support.agent_media import FFMPEG, AttachmentServer, audio, pdf

from agent.media.audio import for_transcription
from agent.media.documents import pdf_text
from agent.media.fetch import fetch
from agent.media.transcribe import WhisperTranscriber
from standins.openai_api import OpenAIStandin

INPUTS = {"ogg_opus": ("ogg", "libopus", "audio/ogg"), "3gp_aac": ("3gp", "aac", "audio/3gpp")}
PAGE_TEXT = "\n".join(f"Line {n}: the tenant shall keep the premises in good repair and order."
                      for n in range(42))  # ~3,000 characters, a dense page


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def voice_case(files: AttachmentServer, transcriber: WhisperTranscriber, client: httpx.Client,
               seconds: int, kind: str, runs: int) -> dict:
    """Time ``runs`` voice notes of ``seconds`` in format ``kind``; return the figures."""
    container, codec, mime = INPUTS[kind]
    data = audio(seconds, container, codec)
    attachment = files.add(data, kind="voice", mime_type=mime, name=f"note.{container}")
    stages: dict[str, list[float]] = {"fetch": [], "convert": [], "transcribe": [], "total": []}
    for _ in range(runs):
        started = time.perf_counter()
        body = fetch(attachment, max_bytes=50 * 1024 * 1024, client=client)
        fetched = time.perf_counter()
        upload = for_transcription(body, mime, attachment["name"])
        converted = time.perf_counter()
        transcriber.transcribe(upload)
        done = time.perf_counter()
        for name, value in (("fetch", fetched - started), ("convert", converted - fetched),
                            ("transcribe", done - converted), ("total", done - started)):
            stages[name].append(value)
    return {"bytes": len(data), "uploaded_bytes": len(upload.data),
            "p50_ms": _ms(statistics.median(stages["total"])), "p99_ms": _ms(_pct(stages["total"], 0.99)),
            **{f"{name}_p50_ms": _ms(statistics.median(stages[name]))
               for name in ("fetch", "convert", "transcribe")}}


def pdf_case(runs: int, max_chars: int) -> dict:
    """Time text extraction of a 20-page PDF, at most ``max_chars`` characters."""
    document = pdf([f"Page {n}\n{PAGE_TEXT}" for n in range(1, 21)])
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = pdf_text(document, "lease.pdf", max_chars)
        times.append(time.perf_counter() - started)
    return {"bytes": len(document), "chars": len(result.text), "truncated": result.truncated,
            "p50_ms": _ms(statistics.median(times)), "p99_ms": _ms(_pct(times, 0.99))}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="voice notes per case")
    parser.add_argument("--pdf-runs", type=int, default=20, help="extractions per PDF case")
    args = parser.parse_args(argv)
    if FFMPEG is None:
        raise SystemExit("ffmpeg (Debian package) is needed: apt-get install ffmpeg")
    figures: dict = {"voice": {}, "pdf_20_pages": {}}
    with AttachmentServer() as files, OpenAIStandin() as whisper, httpx.Client() as client:
        transcriber = WhisperTranscriber(whisper.base_url, "bench")
        for seconds in (10, 60):
            for kind in INPUTS:
                figures["voice"][f"{seconds}s_{kind}"] = voice_case(files, transcriber, client,
                                                                    seconds, kind, args.runs)
    figures["pdf_20_pages"]["whole"] = pdf_case(args.pdf_runs, 1_000_000)
    figures["pdf_20_pages"]["capped_40000"] = pdf_case(args.pdf_runs, 40_000)
    print(json.dumps({"bench": "media_transcription", **figures}))
    return figures


if __name__ == "__main__":
    main()
