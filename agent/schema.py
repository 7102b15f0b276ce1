"""Versioned schemas of the agent's SQLite stores, tracked in ``PRAGMA user_version``.

Each store (history, inbox, usage, cron, memory) declares an ordered tuple of steps; step
``n`` (1-based) takes the file from version ``n - 1`` to ``n``, and the file's
``user_version`` records the last applied step (https://sqlite.org/pragma.html#pragma_user_version).
A step is an SQL script or a callable taking the connection.  Rules for adding one:

* append a step, never edit or reorder a released one (a store file remembers only a number);
* step 1 of every store is its first schema, written with ``IF NOT EXISTS`` so files made
  before versioning (``user_version`` 0, tables present) pass through it unchanged;
* a later step that alters a table checks first (``column_names``), for the same reason.

Works with ``sqlite3`` connections opened with ``isolation_level=None`` and with ``apsw``
connections (both autocommit, so the explicit ``BEGIN IMMEDIATE`` below is the transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

Step = str | Callable[[Any], None]  # SQL, or a function given the connection


class StoreSchemaError(Exception):
    """A store file's schema version is newer than this agent knows (written by a newer release)."""


def column_names(connection, table: str) -> set[str]:
    """Return the names of ``table``'s columns (empty when it does not exist)."""
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})").fetchall()}


def _statements(script: str) -> list[str]:
    """Split an SQL script into statements (``sqlite3.complete_statement`` knows triggers)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _version(connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def apply(connection, store: str, steps: Sequence[Step]) -> int:
    """Apply the steps the file has not had yet, all in one ``BEGIN IMMEDIATE`` transaction.

    The version is read again after the write lock is taken, so two processes opening one
    file at once apply each step once.  On any error the transaction rolls back and the file
    keeps its old version.

    Args:
        connection: an autocommit ``sqlite3`` or ``apsw`` connection.
        store: the store's name, for error messages.
        steps: the store's steps, oldest first.

    Returns:
        The file's version afterwards (``len(steps)``).

    Raises:
        StoreSchemaError: the file's version is higher than ``len(steps)``.
    """
    latest = len(steps)
    if _version(connection) == latest:
        return latest
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _version(connection)
        if version > latest:
            raise StoreSchemaError(f"{store} store is at schema version {version}, newer than "
                                   f"this agent's {latest}; upgrade the agent")
        for step in steps[version:]:
            if callable(step):
                step(connection)
            else:
                for statement in _statements(step):
                    connection.execute(statement)
        # PRAGMA takes no bound parameters; ``latest`` is an int we computed.
        connection.execute(f"PRAGMA user_version = {latest:d}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return latest
