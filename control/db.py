"""The control plane's database handle.

Models bind to ``database``, a peewee ``DatabaseProxy``; ``init_database`` points it at SQLite
(default) or Postgres from a URL, so models never import configuration (peewee's playhouse
pattern, STYLE.md).
"""

from __future__ import annotations

from pathlib import Path

from peewee import DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect

database = DatabaseProxy()

SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": "normal"}
# A pool keeps Postgres connections across requests; opening one per request caps webhooks at
# about 100/s (measured by bench/routing.py).  Stale connections are recycled after 300 s.
POSTGRES_POOL = {"max_connections": 32, "stale_timeout": 300}


def init_database(url: str):
    """Connect ``database`` to ``url`` and create missing tables.

    Args:
        url: ``sqlite:////abs/path.db`` or ``postgresql://user:pass@host:port/db``.

    Returns:
        The concrete peewee ``Database``.
    """
    from control.models import ALL_MODELS

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        db = connect(url, pragmas=SQLITE_PRAGMAS)
    else:
        scheme, sep, rest = url.partition("://")
        if scheme in ("postgres", "postgresql"):
            url = f"postgresql+pool{sep}{rest}"
        db = connect(url, **(POSTGRES_POOL if url.startswith("postgresql+pool") else {}))
    database.initialize(db)
    with db.connection_context():
        db.create_tables(ALL_MODELS, safe=True)
    return db


def write_transaction():
    """Return a transaction for read-then-write work.

    On SQLite it starts with ``BEGIN IMMEDIATE`` so the write lock is taken up front: a deferred
    transaction that reads first fails with "database is locked" when another connection
    writes in between, and the busy timeout cannot help (https://sqlite.org/lang_transaction.html).
    """
    if isinstance(database.obj, SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()
