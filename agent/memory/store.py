"""MemoryStore: long-term memory of one tenant's agent in a SQLite file.

Hybrid retrieval (agent/memory/retrieval.py): sqlite-vec nearest neighbours over each memory's
own text and its episode window, plus FTS5 BM25, fused by scaled scores with episode context,
lifted when created in a period the query names ("on 7 July, 2023", "last week"), and
multiplied by a recency weight (memories not accessed for 90 days weigh less).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Self

from agent.memory import index, retrieval
from agent.memory.embedders import Embedder, default_embedder
from agent.memory.errors import MemoryRejected
from agent.memory.guard import injection_reason
from agent.memory.ranking import RetrievalConfig, speaker_of
from agent.memory.timeparse import to_utc
from agent.memory.vectors import VectorMirror

# Cosine similarity (all-MiniLM-L6-v2) at or above which a new memory restates an existing one
# and replaces it instead of adding a second copy; paraphrases of one fact score ~0.85-0.95,
# related but distinct facts ~0.5-0.8 (measured in tests/agent/test_memory_store.py).
DUPLICATE_SIMILARITY = 0.85


@dataclass
class MemoryItem:
    """One memory. ``score`` is the fused retrieval score (0.0 outside search results)."""

    id: int
    text: str
    source: str | None
    created_at: datetime
    last_accessed_at: datetime
    score: float = 0.0


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class MemoryStore:
    """Memories in the SQLite file at ``path`` (":memory:" for a throwaway store).

    ``embedder`` defaults to the process-wide bundled all-MiniLM-L6-v2, loaded on first need;
    ``config`` tunes retrieval; ``clock`` returns Unix seconds (tests freeze it); ``zone`` (a
    tzinfo, UTC by default) is the user's time zone, whose calendar days a query such as "what
    did I say yesterday?" means. Thread-safe.
    """

    def __init__(self, path: str | Path, *, embedder: Embedder | None = None,
                 config: RetrievalConfig | None = None, clock=time.time, zone: tzinfo = UTC):
        self.path = str(path)
        self.config = config or RetrievalConfig()
        self.zone = zone
        self._embedder = embedder
        self._clock = clock
        self._lock = threading.RLock()
        self._db = index.connect(self.path)
        self._vectors: VectorMirror | None = None
        self._data_version = None

    @property
    def embedder(self) -> Embedder:
        """The embedder in use (the shared local model unless one was given)."""
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def add(self, text: str, *, source: str | None = None, created_at=None) -> int:
        """Store ``text`` as a new memory and return its id.

        ``source`` is a free label (a message id, "user", "extraction"); ``created_at`` when the
        remembered thing happened: datetime, Unix seconds, ISO text or text like
        "4:05 pm on 12 March, 2024" (LoCoMo's form; default now). No screening or merging: see ``remember``.
        Raises ValueError for empty text or an unreadable timestamp.
        """
        return self.add_many([(text, source, created_at)])[0]

    def add_many(self, items) -> list[int]:
        """Store several (text, source, created_at) tuples in one transaction; returns their ids."""
        now = self._clock()
        rows = []
        for text, source, created_at in items:
            if not text or not text.strip():
                raise ValueError("memory text is empty")
            rows.append((text.strip(), source, to_utc(created_at, default=_utc(now)).timestamp()))
        ids = []
        with self._lock, self._db:
            for text, source, created in rows:
                ids.append(index.insert(self._db, text, source, speaker_of(text), created, now, self.config))
        return ids

    def remember(self, text: str, *, source: str | None = None, created_at=None) -> tuple[int, bool]:
        """Store a fact or preference unless it restates one already kept.

        Returns (id, merged): when an existing memory has cosine similarity >= DUPLICATE_SIMILARITY
        its text is replaced by the newer wording (newer statements win), it is marked accessed,
        and (its id, True) is returned; otherwise (new id, False).
        Raises MemoryRejected when the text reads like an instruction to the agent.
        """
        text = (text or "").strip()
        reason = injection_reason(text)
        if reason:
            raise MemoryRejected(text, reason)
        with self._lock:
            duplicate = self._nearest(text)
            if duplicate is None or duplicate[1] < DUPLICATE_SIMILARITY:
                return self.add(text, source=source, created_at=created_at), False
            memory_id = duplicate[0]
            with self._db:
                index.replace_text(self._db, memory_id, text, speaker_of(text))
                self._db.execute("UPDATE memories SET source = COALESCE(?, source), last_accessed_at = ? WHERE id = ?",
                                 (source, self._clock(), memory_id))
            return memory_id, True

    def _nearest(self, text: str) -> tuple[int, float] | None:
        self.flush()
        if not index.has_vector_tables(self._db):
            return None
        index.ensure_vector_tables(self._db, self.embedder)
        vector = self.embedder.embed([text])[0]
        row = self._db.execute(
            "SELECT rowid, distance FROM memory_vectors WHERE embedding MATCH ? AND k = 1",
            (vector.tobytes(),)).fetchone()
        return None if row is None else (row[0], 1.0 - row[1])

    def flush(self) -> int:
        """Embed pending memories now (search does this itself); returns how many were indexed."""
        with self._lock:
            flushed = index.flush(self._db, self.embedder)
            if self._vectors is not None:
                self._vectors.refresh(self._db, flushed)
            return len(flushed)

    def _mirror(self) -> VectorMirror:
        # PRAGMA data_version changes when another connection (another process of this tenant's
        # agent) commits; the in-memory vectors are then re-read so they never go stale.
        version = self._scalar("PRAGMA data_version")
        if self._vectors is None or version != self._data_version:
            index.ensure_vector_tables(self._db, self.embedder)
            self._vectors = VectorMirror.load(self._db, self.embedder.dim)
            self._data_version = version
        return self._vectors

    def search(self, query: str, k: int = 5) -> list[MemoryItem]:
        """The ``k`` memories most relevant to ``query``, best first, marked as accessed now."""
        if k <= 0 or not query.strip():
            return []
        with self._lock:
            self.flush()
            if not index.has_vector_tables(self._db):
                return []
            vector = self.embedder.embed([query])[0]
            now = self._clock()
            scores = retrieval.score_candidates(self._db, self._mirror(), query, vector, self.config, now, self.zone)
            best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
            if not best:
                return []
            loaded = {item.id: item for item in self._load(best)}
            top = [loaded[i] for i in best if i in loaded]
            for item in top:
                item.score = scores[item.id]
            with self._db:
                self._db.executemany(
                    "UPDATE memories SET last_accessed_at = ?, access_count = access_count + 1 WHERE id = ?",
                    [(now, item.id) for item in top])
            return top

    def _load(self, ids: list[int]) -> list[MemoryItem]:
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT id, text, source, created_at, last_accessed_at FROM memories WHERE id IN ({marks})", ids)
        return [MemoryItem(id=r[0], text=r[1], source=r[2], created_at=_utc(r[3]), last_accessed_at=_utc(r[4]))
                for r in rows]

    def get(self, memory_id: int) -> MemoryItem | None:
        """The memory with ``memory_id``, or None."""
        with self._lock:
            items = self._load([int(memory_id)])
        return items[0] if items else None

    def list_recent(self, limit: int = 20) -> list[MemoryItem]:
        """Up to ``limit`` memories, newest first (by created_at, then id)."""
        with self._lock:
            rows: list[tuple[Any, ...]] = self._db.execute(
                "SELECT id FROM memories ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
            items = {item.id: item for item in self._load([row[0] for row in rows])} if rows else {}
        return [items[row[0]] for row in rows]

    def count(self) -> int:
        """How many memories are stored."""
        with self._lock:
            return self._scalar("SELECT count(*) FROM memories")

    def _scalar(self, sql: str) -> Any:
        """The one value ``sql`` selects (a PRAGMA or an aggregate: always one row)."""
        row = self._db.execute(sql).fetchone()
        assert row is not None
        return row[0]

    def __len__(self) -> int:
        return self.count()

    def forget(self, memory_id: int) -> bool:
        """Delete memory ``memory_id``; True if it existed. Ids are never reused."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM memories WHERE id = ?", (int(memory_id),)).fetchone() is None:
                return False
            with self._db:
                index.delete(self._db, int(memory_id))
            if self._vectors is not None:
                self._vectors.remove(int(memory_id))
            return True

    def forget_matching(self, query: str, *, limit: int = 3, min_similarity: float = 0.5) -> list[MemoryItem]:
        """Delete up to ``limit`` of the best matches for ``query`` whose own-text cosine similarity
        to it is at least ``min_similarity`` (so an unrelated query deletes nothing).

        Returns the deleted memories, best match first.
        """
        with self._lock:
            candidates = self.search(query, k=limit)
            if not candidates:
                return []
            query_vector = self.embedder.embed([query])[0]
            vectors = self.embedder.embed([item.text for item in candidates])
            doomed = [item for item, similarity in zip(candidates, vectors @ query_vector, strict=True)
                      if similarity >= min_similarity]
            for item in doomed:
                self.forget(item.id)
            return doomed

    def set_last_accessed(self, memory_id: int, when) -> None:
        """Set when ``memory_id`` was last accessed (import, migration, tests); ``when`` as for add."""
        with self._lock, self._db:
            self._db.execute("UPDATE memories SET last_accessed_at = ? WHERE id = ?",
                             (to_utc(when).timestamp(), int(memory_id)))

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
