"""The control plane's database handle.

Models bind to ``database``, a peewee ``DatabaseProxy``; ``init_database`` points it at SQLite
(default) or Postgres from a URL, so models never import configuration (peewee's playhouse
pattern, STYLE.md).
"""

from __future__ import annotations

from pathlib import Path

from peewee import DatabaseProxy
from playhouse.db_url import connect

database = DatabaseProxy()

SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": "normal"}


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
        db = connect(url)
    database.initialize(db)
    with db.connection_context():
        db.create_tables(ALL_MODELS, safe=True)
    return db
