"""``control.db.write_transaction`` on SQLite: a process's writers queue for the write lock,
every read-then-write lands, and a nested transaction neither waits for itself nor loses work."""

from __future__ import annotations

import shutil
import threading
import time

from control.db import database, init_database, write_transaction

THREADS, ROUNDS = 8, 5


def _counter(tmp_path, sqlite_template):
    shutil.copyfile(sqlite_template, tmp_path / "control.db")
    db = init_database(f"sqlite:///{tmp_path / 'control.db'}")
    db.execute_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO counter (n) VALUES (0)")
    return db


def _value(db) -> int:
    return db.execute_sql("SELECT n FROM counter").fetchone()[0]


def test_concurrent_read_then_write_transactions_all_land(tmp_path, sqlite_template):
    db = _counter(tmp_path, sqlite_template)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            with database.connection_context():
                for _ in range(ROUNDS):
                    with write_transaction():
                        n = _value(db)
                        time.sleep(0.002)  # the lock is held across the read and the write
                        db.execute_sql("UPDATE counter SET n = ?", (n + 1,))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    assert _value(db) == THREADS * ROUNDS
    db.close()


def test_a_nested_write_transaction_is_part_of_the_outer_one(tmp_path, sqlite_template):
    db = _counter(tmp_path, sqlite_template)
    done = threading.Event()

    def nested() -> None:
        with database.connection_context(), write_transaction():
            db.execute_sql("UPDATE counter SET n = n + 1")
            with write_transaction():  # a savepoint: must not wait for the outer one
                db.execute_sql("UPDATE counter SET n = n + 10")
        done.set()

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    assert done.wait(10), "a nested write_transaction waited for its own outer transaction"
    assert _value(db) == 11
    db.close()
