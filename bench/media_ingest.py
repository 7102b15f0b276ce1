"""Media download + store overhead per attachment (issue #12), as the ``ingest_media`` task pays it.

    python bench/media_ingest.py [--runs 40] [--large-runs 10]

Each run ingests one envelope with one document through the production code path
(``control.services.media.ingest``): ``TelegramAdapter.fetch_media`` (``getFile`` + the streamed
download) from the local Telegram Bot API stand-in, the type check, the SHA-256, and the write to
the media store: ``LocalObjectStore`` on this host's disk (the embedded default) and
``S3ObjectStore`` on moto's S3 server on loopback (production speaks the same API to Hetzner
Object Storage, whose network time is not measured here; moto runs in this process, so its
CPU time is counted).  Files of 100 KB, 1 MB and 10 MB (``--large-runs`` for 10 MB).  Reports
``download_ms`` (fetch only), ``store_ms`` (type check, hash, write) and ``total_ms`` (what one
attachment adds to a message's delivery), p50 and p99, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import percentile

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.providers.archive import LocalObjectStore, S3ObjectStore
from control.services import media
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import Envelope

SIZES = {"100KB": 100 * 1024, "1MB": 1024 * 1024, "10MB": 10 * 1024 * 1024}


class _TimedAdapter:
    """Wraps an adapter, recording how long each ``fetch_media`` took (ms)."""

    def __init__(self, adapter):
        self.adapter, self.times = adapter, []

    def fetch_media(self, attachment, max_bytes):
        start = time.perf_counter()
        try:
            return self.adapter.fetch_media(attachment, max_bytes)
        finally:
            self.times.append((time.perf_counter() - start) * 1000)


def _moto_store():
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                 aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="media")
    return server, S3ObjectStore("media", endpoint_url=endpoint, access_key="bench",
                                 secret_key="bench", region="us-east-1")


def _measure(adapter, store, size: int, runs: int) -> dict:
    timed = _TimedAdapter(adapter)
    signer = media.MediaSigner("bench-secret", "https://hermes.example")
    totals = []
    for _ in range(runs):
        envelope = Envelope(id=uuid.uuid4().hex, tenant="1", channel="telegram", chat_id="1",
                            sender_id="1", text="", attachments=[
                                {"kind": "document", "file_id": f"f{size}", "size": size,
                                 "mime_type": "application/pdf", "name": "bench.pdf"}])
        start = time.perf_counter()
        [attachment] = media.ingest(envelope, timed, store, signer, env="bench").attachments
        totals.append((time.perf_counter() - start) * 1000)
        assert attachment.get("url"), attachment
    stores = [total - download for total, download in zip(totals, timed.times, strict=True)]
    return {name: {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}
            for name, values in (("download_ms", timed.times), ("store_ms", stores),
                                 ("total_ms", totals))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="runs for 100 KB and 1 MB")
    parser.add_argument("--large-runs", type=int, default=10, help="runs for 10 MB")
    args = parser.parse_args()
    results: dict[str, dict] = {"local": {}, "s3_moto": {}}
    with TelegramBotApiStandin() as api, tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES.items():
            api.add_file(f"f{size}", b"%PDF-1.7\n" + os.urandom(size - 9), f"documents/{label}.pdf")
        adapter = TelegramAdapter(BotApiClient(api.token, api.base_url))
        server, s3 = _moto_store()
        try:
            for label, size in SIZES.items():
                runs = args.large_runs if size >= 10 * 1024 * 1024 else args.runs
                results["local"][label] = _measure(adapter, LocalObjectStore(tmp), size, runs)
                results["s3_moto"][label] = _measure(adapter, s3, size, runs)
        finally:
            adapter.close()
            server.stop()
    print(json.dumps({"bench": "media_ingest", "runs": args.runs, "large_runs": args.large_runs,
                      "load_average": round(os.getloadavg()[0], 2), **results}))


if __name__ == "__main__":
    main()
