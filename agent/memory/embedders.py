"""Text embedders: one interface, a bundled local model and an OpenAI-compatible API."""

from __future__ import annotations

import abc
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from agent.memory import onnx_export
from wire import embedder_export


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder(abc.ABC):
    """Maps texts to unit-length float32 vectors; cosine similarity is then a dot product.

    ``name`` identifies the model (stored with a memory database so vectors from two models
    are never mixed); ``dim`` is the vector length.
    """

    name: str = "embedder"

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector length."""

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns an array of shape (len(texts), dim), float32, rows L2-normalised."""


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384 dimensions) run on CPU by ONNX Runtime, from an export directory
    (``wire.embedder_export``: model.onnx, tokenizer.json, embedder.json).

    ``model_dir`` is that directory: ``HERMES_EMBEDDER_DIR`` (on a tenant VM the image's
    ``/opt/hermes/embedder``, exported on the build host), else ``~/.cache/hermes/...``, where
    the model is exported once on first use when torch and sentence-transformers are installed
    (the demo, the suite). No hub access either way. The pipeline is sentence-transformers'
    (tokenize, truncate to ``max_seq_length``, transformer, mean pooling over the attention
    mask, L2 normalisation), so vectors match ``SentenceTransformer.encode`` (cosine >= 0.999,
    tests/agent/test_embedder_onnx.py). Loaded on first use; texts are embedded in batches of
    ``batch_size`` sorted by length, as ``encode`` does, to limit padding.

    Raises ``wire.embedder_export.EmbedderExportError`` on first use when the directory holds
    no export and this machine cannot make one.
    """

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 64):
        self._dir = Path(model_dir) if model_dir else embedder_export.default_dir()
        self._batch_size = batch_size
        self._session: Any = None
        self._tokenizer: Any = None
        self._manifest: dict[str, Any] = {}
        self._lock = threading.Lock()
        manifest = embedder_export.read_manifest(self._dir)
        self.name = manifest["name"] if manifest else embedder_export.MODEL_NAME

    @property
    def model_dir(self) -> Path:
        """The export directory this embedder runs from."""
        return self._dir

    def _load(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime
                from tokenizers import Tokenizer

                directory = self._dir
                manifest = (embedder_export.read_manifest(directory)
                            or embedder_export.read_manifest(onnx_export.export(directory)))
                if manifest is None:  # exported just now and removed meanwhile
                    raise embedder_export.EmbedderExportError(f"the export in {directory} disappeared")
                tokenizer = Tokenizer.from_file(str(directory / embedder_export.TOKENIZER_FILE))
                tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = onnxruntime.InferenceSession(str(directory / embedder_export.MODEL_FILE), options,
                                                       providers=["CPUExecutionProvider"])
                self.name = manifest["name"]
                self._manifest, self._tokenizer, self._session = manifest, tokenizer, session
        return self._session

    @property
    def dim(self) -> int:
        self._load()
        return int(self._manifest["dim"])

    def embed(self, texts: list[str]) -> np.ndarray:
        session = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            chunk = order[start:start + self._batch_size]
            out[chunk] = self._run(session, [encodings[i] for i in chunk])
        return out

    def _run(self, session: Any, encodings: list[Any]) -> np.ndarray:
        # Right-padded to the longest text of the batch; padding is masked out of the mean.
        width = max(len(encoding.ids) for encoding in encodings)
        columns = {"input_ids": np.full((len(encodings), width), int(self._manifest["pad_id"]), dtype=np.int64),
                   "attention_mask": np.zeros((len(encodings), width), dtype=np.int64),
                   "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64)}
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            columns["input_ids"][row, :size] = encoding.ids
            columns["attention_mask"][row, :size] = encoding.attention_mask
            columns["token_type_ids"][row, :size] = encoding.type_ids
        hidden = session.run(None, {name: columns[name] for name in self._manifest["inputs"]})[0]
        weights = columns["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)


class OpenAICompatibleEmbedder(Embedder):
    """Embeddings from any server speaking the OpenAI ``POST /v1/embeddings`` API.

    ``model`` is the server's model name; ``base_url`` its API root (for example
    ``http://127.0.0.1:11434/v1`` for Ollama); ``api_key`` defaults to OPENAI_API_KEY or a
    placeholder for servers that need none. ``dim`` may be given to avoid a probe request.
    Errors from the ``openai`` SDK (``openai.APIError`` and subclasses) propagate.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 dim: int | None = None, batch_size: int = 256, client: Any = None):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none")
        self._client = client
        self._model = model
        self._dim = dim
        self._batch_size = batch_size
        self.name = f"openai:{model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start:start + self._batch_size])
            response = self._client.embeddings.create(model=self._model, input=batch)
            rows.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        vectors = _normalise(np.asarray(rows, dtype=np.float32))
        self._dim = vectors.shape[1]
        return vectors


_shared_lock = threading.Lock()
_shared: LocalEmbedder | None = None


def default_embedder(model_dir: str | Path | None = None) -> LocalEmbedder:
    """The process-wide LocalEmbedder, created once (by the first call, whose ``model_dir`` it
    keeps: ``AgentConfig.embedder_dir``, None for the default cache) and loaded on first use."""
    global _shared  # noqa: PLW0603 - one model per process, loaded on first use
    with _shared_lock:
        if _shared is None:
            _shared = LocalEmbedder(model_dir)
        return _shared
