"""The control plane's database handle.

Models bind to ``database``, a peewee ``DatabaseProxy``; ``init_database`` points it at SQLite
(default) or Postgres from a URL, so models never import configuration (peewee's playhouse
pattern, STYLE.md).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from peewee import DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect

from control import migrations

database = DatabaseProxy()

SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": "normal"}
# A pool keeps Postgres connections across requests; opening one per request caps webhooks at
# about 100/s (measured by bench/routing.py).  Stale connections are recycled after 300 s.
POSTGRES_POOL = {"max_connections": 32, "stale_timeout": 300}


def connect_database(url: str):
    """Connect ``database`` to ``url`` without touching the schema.

    Args:
        url: ``sqlite:////abs/path.db`` or ``postgresql://user:pass@host:port/db``.

    Returns:
        The concrete peewee ``Database``.
    """
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        db = connect(url, pragmas=SQLITE_PRAGMAS)
    else:
        scheme, sep, rest = url.partition("://")
        if scheme in ("postgres", "postgresql"):
            url = f"postgresql+pool{sep}{rest}"
        db = connect(url, **(POSTGRES_POOL if url.startswith("postgresql+pool") else {}))
    database.initialize(db)
    return db


def init_database(url: str, upgrade: bool = True):
    """Connect ``database`` to ``url`` and make sure its schema is current.

    Embedded processes (``hermes serve``, ``hermes demo``, tests) upgrade in place; production
    processes (gunicorn's ``create_app()``, ``hermes worker``) pass ``upgrade=False`` and
    refuse to start until ``hermes db upgrade`` has run, so several workers never race to
    change the schema (``control/migrations``).

    Args:
        url: ``sqlite:////abs/path.db`` or ``postgresql://user:pass@host:port/db``.
        upgrade: apply pending migrations (True) or only check that none are pending.

    Returns:
        The concrete peewee ``Database``.

    Raises:
        control.migrations.SchemaOutOfDate: ``upgrade`` is False and steps are pending.
    """
    db = connect_database(url)
    if upgrade:
        migrations.upgrade(db)
    else:
        migrations.require_current(db)
    return db


def write_transaction():
    """Return a transaction for read-then-write work.

    On SQLite it starts with ``BEGIN IMMEDIATE`` so the write lock is taken up front: a deferred
    transaction that reads first fails with "database is locked" when another connection
    writes in between, and the busy timeout cannot help (https://sqlite.org/lang_transaction.html).
    In this process the SQLite writers also queue on one lock before ``BEGIN IMMEDIATE``:
    SQLite's busy handler polls a held lock with sleeps growing to 100 ms
    (``sqliteDefaultBusyCallback`` in sqlite3.c), so threads contending for it waited up to
    hundreds of ms for a lock held a few ms (webhook p99, ``bench/load.py --scenario 1``); the
    lock wakes the next writer as soon as the holder commits.  A transaction nested in one this
    thread already runs is a savepoint and takes no lock (the thread may hold SQLite's).
    """
    db = database.obj
    if isinstance(db, SqliteDatabase):
        if db.in_transaction():
            return db.atomic("IMMEDIATE")
        return _queued(db.atomic("IMMEDIATE"))
    return database.atomic()


# One per process: every thread's SQLite connection here writes the same database file.
_sqlite_writers = threading.Lock()


@contextmanager
def _queued(transaction):
    """Enter ``transaction`` holding ``_sqlite_writers``; released after commit or rollback."""
    with _sqlite_writers, transaction:
        yield transaction
