"""The agent's SQLite stores carry a schema version (``PRAGMA user_version``): files written by
older agents are upgraded in place and keep their rows."""

from __future__ import annotations

import sqlite3
import threading

import apsw
import pytest

from agent import cron, history, inbox, schema, usage
from agent.memory import index
from agent.memory.store import MemoryStore


def _user_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def _old_file(path, script: str, *rows: str) -> None:
    """A store file as an agent before versioning left it: tables, rows, ``user_version`` 0."""
    conn = sqlite3.connect(path)
    conn.executescript(script)
    for row in rows:
        conn.execute(row)
    conn.commit()
    conn.close()


def test_history_written_before_versioning_keeps_its_turns(tmp_path):
    path = tmp_path / "history.db"
    _old_file(path, history.STEPS[0],
              "INSERT INTO turns (chat_key, role, text, envelope_id, created_at) "
              "VALUES ('telegram:42', 'user', 'my cat is Miso', 'env-1', 1.0)",
              "INSERT INTO processed VALUES ('env-1', 'noted', 1.0)")

    store = history.History(path)

    assert store.recent("telegram:42", 10) == [{"role": "user", "content": "my cat is Miso"}]
    assert store.processed_reply("env-1") == "noted"
    assert _user_version(path) == len(history.STEPS)


@pytest.mark.parametrize(("module", "open_store", "table"), [
    (usage, usage.UsageLedger, "llm_calls"),
    (inbox, inbox.InboxLedger, "inbox"),
    (cron, lambda p: cron.CronStore(p, "t1"), "cron_jobs"),
], ids=["usage", "inbox", "cron"])
def test_each_store_opens_its_pre_versioning_file_with_rows_intact(tmp_path, module, open_store,
                                                                    table):
    path = tmp_path / f"{table}.db"
    conn = sqlite3.connect(path)
    conn.executescript(module.STEPS[0])
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
    conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                 ["x" if c in ("payload", "prompt", "tenant", "chat_key", "envelope_id") else 1
                  for c in columns])
    conn.commit()
    conn.close()

    open_store(path)

    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1
    assert _user_version(path) == len(module.STEPS)


def test_memory_file_from_before_shape_priors_gains_filled_columns(tmp_path):
    path = tmp_path / "memory.db"
    # The memory store before version 2: no body_chars/is_question/mentions_time columns.
    old = apsw.Connection(str(path))
    old.execute(index.INITIAL_SCHEMA)
    old.execute("INSERT INTO memories(text, created_at, last_accessed_at, needs_vector, needs_window) "
                "VALUES ('Did I tell you about my trip to Lisbon yesterday?', 10.0, 10.0, 0, 0)")
    old.execute("INSERT INTO memory_fts(rowid, text) VALUES (1, 'Did I tell you about my trip to Lisbon yesterday?')")
    old.close()

    store = MemoryStore(path)
    try:
        assert [m.text for m in store.list_recent()] == ["Did I tell you about my trip to Lisbon yesterday?"]
        row = store._db.execute("SELECT body_chars, is_question, mentions_time FROM memories").fetchone()
        assert row[0] > 0 and row[1] == 1 and row[2] == 1
    finally:
        store.close()
    assert _user_version(path) == len(index.STEPS) == 2


def test_memory_file_made_by_the_unversioned_agent_opens_without_duplicate_columns(tmp_path):
    path = tmp_path / "memory.db"
    MemoryStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 0")  # how the previous agent left a current file

    store = MemoryStore(path)
    store.add("I live in Porto")
    assert store.count() == 1
    store.close()
    assert _user_version(path) == 2


def test_failed_step_rolls_back_and_leaves_the_old_version(tmp_path):
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)

    def broken(connection):
        connection.execute("INSERT INTO notes VALUES ('half-done')")
        raise RuntimeError("disk on fire")

    steps = ("CREATE TABLE notes (text TEXT);", broken)
    with pytest.raises(RuntimeError):
        schema.apply(conn, "notes", steps)

    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchone() is None
    conn.close()


def test_file_from_a_newer_agent_is_refused(tmp_path):
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")

    with pytest.raises(schema.StoreSchemaError, match="version 99"):
        history.History(path)


def test_two_processes_opening_one_file_apply_each_step_once(tmp_path):
    path = tmp_path / "store.db"
    calls: list[int] = []
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def count(connection):
        calls.append(1)
        connection.execute("CREATE TABLE counted (x INTEGER)")

    def open_file():
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            barrier.wait(timeout=10)
            schema.apply(conn, "counted", ("CREATE TABLE IF NOT EXISTS base (x INTEGER);", count))
        except Exception as exc:  # noqa: BLE001 - every thread's outcome is asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_file) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and calls == [1]
    assert _user_version(path) == 2
