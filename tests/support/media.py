"""Media tests: sample files of each accepted type, running the queued media task, reading URLs."""

from __future__ import annotations

import datetime as dt
import os
from urllib.parse import urlsplit

import httpx
from werkzeug.wrappers import Response

from wire.protocol import Envelope, messages_stream

# Real magic numbers (JPEG SOI + JFIF APP0, "OggS", "%PDF-") followed by random bytes: what
# ``filetype`` recognises, and what a platform would serve.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + os.urandom(104_000)
OGG = b"OggS\x00\x02" + b"\x00" * 20 + os.urandom(6_400)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + os.urandom(120_000)
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + os.urandom(4_000)


def run_media_tasks(huey, horizon: float = 3600.0) -> int:
    """Run every queued ``ingest_media`` task, and its retries as they fall due (the schedule is
    read ``horizon`` seconds ahead, so backoff delays do not make the test wait); other queued
    tasks are put back.  Returns how many attempts ran."""
    attempts, others = 0, []
    ahead = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=horizon)
    while True:
        task = huey.dequeue()
        if task is None:
            due = huey.read_schedule(ahead)
            if not due:
                break
            for task in due:
                huey.enqueue(task)
            continue
        if task.name != "ingest_media":
            others.append(task)
            continue
        huey.execute(task, timestamp=ahead)  # a retry's eta counts as reached
        attempts += 1
    for task in others:
        huey.enqueue(task)
    return attempts


def inbox(runtime, tenant) -> list[Envelope]:
    """Every envelope on the tenant's inbox stream (read by a fresh consumer group)."""
    group = f"media-test-{os.urandom(4).hex()}"
    deliveries = runtime.bus.read([messages_stream(str(tenant.id))], group, "t", count=100)
    return [Envelope.from_json(d.payload) for d in deliveries]


def fetch(client, url: str):
    """GET a media URL: the control plane's signed route on the test app (its path), or an
    object store's presigned URL over HTTP (as a werkzeug ``Response``, like the test app's)."""
    if "Signature=" not in urlsplit(url).query:  # not presigned by the object store
        return client.get(urlsplit(url).path)
    answer = httpx.get(url, timeout=10)
    return Response(answer.content, status=answer.status_code, headers=dict(answer.headers))
