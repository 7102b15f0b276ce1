"""SQLite schema and index maintenance of the memory store (apsw + FTS5 + sqlite-vec).

Each memory has three index entries: its own text in FTS5, a vector of its own text, and a
vector of its *window* (its predecessor in the same episode followed by itself, the way
contextual retrieval embeds a chunk with what leads up to it). Memories added within
``episode_gap_seconds`` of the previous one share an episode (``prev_id`` links the chain,
``episode_id`` names it); retrieval uses these links. Vectors are computed lazily:
``add`` only marks rows, ``flush`` embeds everything pending in batches, so a burst of adds
costs one batched model call and the result equals embedding on every add.
Each row also keeps its shape (characters, is it a question, does it name a time:
agent/memory/priors.py), computed once on write for the retrieval priors.
"""

from __future__ import annotations

from typing import Any

import apsw
import numpy as np
import sqlite_vec

from agent import schema
from agent.memory.embedders import Embedder
from agent.memory.errors import EmbedderMismatch
from agent.memory.priors import shape
from agent.memory.ranking import RetrievalConfig

INITIAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    source TEXT,
    speaker TEXT,
    created_at REAL NOT NULL,
    last_accessed_at REAL NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    prev_id INTEGER,
    episode_id INTEGER,
    needs_vector INTEGER NOT NULL DEFAULT 1,
    needs_window INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS memories_prev ON memories(prev_id);
CREATE INDEX IF NOT EXISTS memories_created ON memories(created_at);
CREATE INDEX IF NOT EXISTS memories_unindexed ON memories(id) WHERE needs_vector = 1 OR needs_window = 1;
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(text, tokenize='porter unicode61');
"""

VECTOR_TABLES = ("memory_vectors", "memory_window_vectors")
SHAPE_COLUMNS = ("body_chars", "is_question", "mentions_time")


def connect(path: str) -> apsw.Connection:
    """Open ``path`` (":memory:" allowed) with sqlite-vec loaded and the schema in place."""
    connection = apsw.Connection(str(path))
    connection.enable_load_extension(True)
    connection.load_extension(sqlite_vec.loadable_path())
    connection.enable_load_extension(False)
    connection.set_busy_timeout(5000)
    if str(path) != ":memory:":
        # WAL with synchronous=NORMAL: durable across application crashes, and a search's
        # access-time update commits without an fsync (SQLite docs, "Write-Ahead Logging").
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    schema.apply(connection, "memory", STEPS)
    return connection


def _add_shape_columns(connection: apsw.Connection) -> None:
    # Files written before the shape priors existed lack these columns: add and fill them.
    # Files made before versioning (user_version 0) may already have them.
    if "mentions_time" in schema.column_names(connection, "memories"):
        return
    for column in SHAPE_COLUMNS:
        connection.execute(f"ALTER TABLE memories ADD COLUMN {column} INTEGER")
    rows: list[tuple[Any, ...]] = connection.execute("SELECT id, text FROM memories").fetchall()
    connection.executemany("UPDATE memories SET body_chars = ?, is_question = ?, mentions_time = ? WHERE id = ?",
                           [(*shape(text), memory_id) for memory_id, text in rows])


# Schema steps in order (agent/schema.py: append, never edit a released step).  The vec0
# tables are not steps: their dimension comes from the embedder (``ensure_vector_tables``).
STEPS = (INITIAL_SCHEMA, _add_shape_columns)


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


def insert(connection: apsw.Connection, text: str, source: str | None, speaker: str | None,
           created_at: float, now: float, config: RetrievalConfig) -> int:
    """Insert one memory, linking it to the latest memory when that is of the same episode."""
    latest = connection.execute(
        "SELECT id, created_at, episode_id FROM memories ORDER BY id DESC LIMIT 1").fetchone()
    prev_id = episode_id = None
    if latest is not None and abs(created_at - latest[1]) <= config.episode_gap_seconds:
        prev_id, episode_id = latest[0], latest[2]
    connection.execute(
        "INSERT INTO memories(text, source, speaker, created_at, last_accessed_at, prev_id, episode_id, "
        "body_chars, is_question, mentions_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (text, source, speaker, created_at, now, prev_id, episode_id, *shape(text)))
    memory_id = connection.last_insert_rowid()
    if episode_id is None:
        connection.execute("UPDATE memories SET episode_id = id WHERE id = ?", (memory_id,))
    connection.execute("INSERT INTO memory_fts(rowid, text) VALUES (?, ?)", (memory_id, text))
    return memory_id


def replace_text(connection: apsw.Connection, memory_id: int, text: str, speaker: str | None) -> None:
    """Change a memory's text; its vectors and its successor's window are recomputed on flush."""
    connection.execute("UPDATE memories SET text = ?, speaker = ?, needs_vector = 1, needs_window = 1, "
                       "body_chars = ?, is_question = ?, mentions_time = ? WHERE id = ?",
                       (text, speaker, *shape(text), memory_id))
    connection.execute("UPDATE memories SET needs_window = 1 WHERE prev_id = ?", (memory_id,))
    connection.execute("UPDATE memory_fts SET text = ? WHERE rowid = ?", (text, memory_id))


def _upsert_vectors(connection: apsw.Connection, table: str, ids: list[int], vectors: np.ndarray) -> None:
    for memory_id, vector in zip(ids, vectors, strict=True):
        connection.execute(f"DELETE FROM {table} WHERE rowid = ?", (memory_id,))
        connection.execute(f"INSERT INTO {table}(rowid, embedding) VALUES (?, ?)",
                           (memory_id, vector.astype(np.float32).tobytes()))


def flush(connection: apsw.Connection, embedder: Embedder) -> list[int]:
    """Embed every pending memory and window; returns the ids (re)indexed."""
    pending: list[tuple[Any, ...]] = connection.execute(
        "SELECT m.id, m.text, m.needs_vector, m.needs_window, p.text FROM memories m "
        "LEFT JOIN memories p ON p.id = m.prev_id WHERE m.needs_vector = 1 OR m.needs_window = 1 "
        "ORDER BY m.id").fetchall()
    if not pending:
        return []
    ensure_vector_tables(connection, embedder)
    own = [(row[0], row[1]) for row in pending if row[2]]
    windows = [(row[0], row[1] if row[4] is None else f"{row[4]}\n{row[1]}") for row in pending if row[3]]
    vectors = embedder.embed([text for _, text in own] + [text for _, text in windows])
    with connection:
        _upsert_vectors(connection, VECTOR_TABLES[0], [i for i, _ in own], vectors[:len(own)])
        _upsert_vectors(connection, VECTOR_TABLES[1], [i for i, _ in windows], vectors[len(own):])
        connection.executemany("UPDATE memories SET needs_vector = 0, needs_window = 0 WHERE id = ?",
                               [(row[0],) for row in pending])
    return [row[0] for row in pending]


def delete(connection: apsw.Connection, memory_id: int) -> None:
    """Remove ``memory_id`` from every index and relink its successor (caller holds a transaction)."""
    connection.execute(
        "UPDATE memories SET prev_id = (SELECT prev_id FROM memories WHERE id = ?), needs_window = 1 "
        "WHERE prev_id = ?", (memory_id, memory_id))
    connection.execute("DELETE FROM memory_fts WHERE rowid = ?", (memory_id,))
    if has_vector_tables(connection):
        for table in VECTOR_TABLES:
            connection.execute(f"DELETE FROM {table} WHERE rowid = ?", (memory_id,))
    connection.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
