"""SQLite schema and index maintenance of the memory store (apsw + FTS5 + sqlite-vec).

Each memory has three index entries: its own text in FTS5, a vector of its own text, and a
vector of its *window* (the memory with its neighbouring memories of the same episode, the
way contextual retrieval embeds a chunk with its surroundings). Vectors are computed lazily:
``add`` only marks rows, ``flush`` embeds everything pending in batches, so a burst of adds
costs one batched model call and the result equals embedding on every add.
"""

from __future__ import annotations

import apsw
import numpy as np
import sqlite_vec

from agent.memory.embedders import Embedder
from agent.memory.errors import EmbedderMismatch
from agent.memory.ranking import RetrievalConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    source TEXT,
    created_at REAL NOT NULL,
    last_accessed_at REAL NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    needs_vector INTEGER NOT NULL DEFAULT 1,
    needs_context INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS memories_pending ON memories(needs_vector, needs_context);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(text, context, tokenize='porter unicode61');
"""

VECTOR_TABLES = ("memory_vectors", "memory_window_vectors")


def connect(path: str) -> apsw.Connection:
    """Open ``path`` (":memory:" allowed) with sqlite-vec loaded and the schema in place."""
    connection = apsw.Connection(str(path))
    connection.enable_load_extension(True)
    connection.load_extension(sqlite_vec.loadable_path())
    connection.enable_load_extension(False)
    connection.set_busy_timeout(5000)
    if str(path) != ":memory:":
        connection.execute("PRAGMA journal_mode=WAL")
    with connection:
        connection.execute(SCHEMA)
    return connection


def ensure_vector_tables(connection: apsw.Connection, embedder: Embedder) -> None:
    """Create the vec0 tables for ``embedder`` on first use; refuse a different embedder later.

    Raises EmbedderMismatch when the database was indexed with another model or dimension.
    """
    meta = dict(connection.execute("SELECT key, value FROM memory_meta"))
    if "embedder" in meta:
        if meta["embedder"] != embedder.name or int(meta["dim"]) != embedder.dim:
            raise EmbedderMismatch(
                f"memory database was indexed with {meta['embedder']} ({meta['dim']} dims), "
                f"not {embedder.name} ({embedder.dim} dims)")
        return
    dim = embedder.dim
    with connection:
        for table in VECTOR_TABLES:
            connection.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} "
                f"USING vec0(embedding float[{dim}] distance_metric=cosine)")
        connection.execute("INSERT INTO memory_meta VALUES ('embedder', ?), ('dim', ?)",
                            (embedder.name, str(dim)))


def has_vector_tables(connection: apsw.Connection) -> bool:
    """True once the vec0 tables exist (the first flush creates them)."""
    return connection.execute("SELECT 1 FROM memory_meta WHERE key = 'embedder'").fetchone() is not None


def neighbours(connection: apsw.Connection, memory_id: int, created_at: float,
               config: RetrievalConfig) -> tuple[list[str], list[str]]:
    """Texts of up to ``config.window`` memories before and after ``memory_id`` in its episode.

    Returns (before, after), each in chronological (id) order.
    """
    low, high = created_at - config.episode_gap_seconds, created_at + config.episode_gap_seconds
    before = connection.execute(
        "SELECT text FROM memories WHERE id < ? AND created_at BETWEEN ? AND ? ORDER BY id DESC LIMIT ?",
        (memory_id, low, high, config.window)).fetchall()
    after = connection.execute(
        "SELECT text FROM memories WHERE id > ? AND created_at BETWEEN ? AND ? ORDER BY id LIMIT ?",
        (memory_id, low, high, config.window)).fetchall()
    return [row[0] for row in reversed(before)], [row[0] for row in after]


def mark_neighbours_stale(connection: apsw.Connection, memory_id: int, created_at: float,
                          config: RetrievalConfig) -> None:
    """Flag the memories whose window includes ``memory_id`` so the next flush re-embeds them."""
    low, high = created_at - config.episode_gap_seconds, created_at + config.episode_gap_seconds
    for order, comparison in (("DESC", "<"), ("ASC", ">")):
        connection.execute(
            f"UPDATE memories SET needs_context = 1 WHERE id IN (SELECT id FROM memories WHERE id {comparison} ? "
            f"AND created_at BETWEEN ? AND ? ORDER BY id {order} LIMIT ?)",
            (memory_id, low, high, config.window))


def _upsert_vectors(connection: apsw.Connection, table: str, ids: list[int], vectors: np.ndarray) -> None:
    for memory_id, vector in zip(ids, vectors):
        connection.execute(f"DELETE FROM {table} WHERE rowid = ?", (memory_id,))
        connection.execute(f"INSERT INTO {table}(rowid, embedding) VALUES (?, ?)",
                           (memory_id, vector.astype(np.float32).tobytes()))


def flush(connection: apsw.Connection, embedder: Embedder, config: RetrievalConfig) -> int:
    """Embed every pending memory and window; returns how many memories were (re)indexed."""
    pending = connection.execute(
        "SELECT id, text, created_at, needs_vector, needs_context FROM memories "
        "WHERE needs_vector = 1 OR needs_context = 1 ORDER BY id").fetchall()
    if not pending:
        return 0
    ensure_vector_tables(connection, embedder)
    own_ids, own_texts, window_ids, window_texts, contexts = [], [], [], [], []
    for memory_id, text, created_at, needs_vector, needs_context in pending:
        if needs_vector:
            own_ids.append(memory_id)
            own_texts.append(text)
        if needs_context:
            before, after = neighbours(connection, memory_id, created_at, config)
            window_ids.append(memory_id)
            window_texts.append("\n".join(before + [text] + after))
            contexts.append("\n".join(before + after))
    vectors = embedder.embed(own_texts + window_texts)
    with connection:
        _upsert_vectors(connection, VECTOR_TABLES[0], own_ids, vectors[:len(own_ids)])
        _upsert_vectors(connection, VECTOR_TABLES[1], window_ids, vectors[len(own_ids):])
        for memory_id, context in zip(window_ids, contexts):
            connection.execute("UPDATE memory_fts SET context = ? WHERE rowid = ?", (context, memory_id))
        connection.executemany("UPDATE memories SET needs_vector = 0, needs_context = 0 WHERE id = ?",
                               [(row[0],) for row in pending])
    return len(pending)


def delete(connection: apsw.Connection, memory_id: int) -> None:
    """Remove ``memory_id`` from every index (the caller holds a transaction)."""
    connection.execute("DELETE FROM memory_fts WHERE rowid = ?", (memory_id,))
    if has_vector_tables(connection):
        for table in VECTOR_TABLES:
            connection.execute(f"DELETE FROM {table} WHERE rowid = ?", (memory_id,))
    connection.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
