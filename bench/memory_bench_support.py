"""Helpers shared by the memory benchmarks: percentiles and a vector cache for ablations."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from agent.memory.embedders import Embedder


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (linear interpolation, numpy's default); 0.0 if empty."""
    return float(np.percentile(values, pct)) if values else 0.0


class CachingEmbedder(Embedder):
    """Wraps an embedder and remembers vectors by text hash (in memory, or in an .npz file).

    Only for retrieval ablations: results are identical to the wrapped embedder, but cached
    texts cost nothing, so ingest and latency numbers measured through it are not real.
    """

    def __init__(self, inner: Embedder, path: Path | None = None):
        self._inner = inner
        self._path = None if path is None else Path(path)
        self.name = inner.name
        self._cache: dict[str, np.ndarray] = {}
        if self._path is not None and self._path.exists():
            with np.load(self._path) as data:
                self._cache = {key: data[key] for key in data.files}

    @property
    def dim(self) -> int:
        return self._inner.dim

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(text) for text in texts]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            vectors = self._inner.embed([texts[i] for i in missing])
            for i, vector in zip(missing, vectors, strict=True):
                self._cache[keys[i]] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[key] for key in keys]).astype(np.float32)

    def save(self) -> None:
        """Write the cache back to its file (no-op for an in-memory cache)."""
        if self._path is not None:
            np.savez(self._path, **self._cache)
