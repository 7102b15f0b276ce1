"""Versioned schema migrations of the control database (peewee's ``playhouse.migrate``).

Convention (read this before adding a step):

* One module per step in this package, named ``m<NNNN>_<name>.py`` with a four-digit,
  gap-free, never-reused version: ``m0001_initial.py``, ``m0002_delivery_send_intent.py``, ...
  Take the next free number; two steps with one number make every start fail loudly.
* Each module has a docstring (its first line is what ``hermes db status`` prints) and defines
  ``def upgrade(migrator, database) -> None`` where ``migrator`` is
  ``playhouse.migrate.SchemaMigrator.from_database(database)``.  Run operations with
  ``playhouse.migrate.migrate(...)``.
* A step never imports ``control.models``: models describe the newest schema, a step the
  change of its own version.  Declare fields inline (``CharField(null=True)``).
* Steps are written so they also succeed on a database whose table already has the change
  (an old ``create_tables`` start may have created it): use ``add_column_if_absent`` and
  ``add_index_if_absent`` below.
* A step never edits a released step; fix forward with a new one.
* Together the steps must produce exactly the schema of ``control/models.py``
  (``tests/control/test_migrations.py`` compares them), so a model change and its step land
  together.

The runner applies each pending step in its own transaction, under a lock (Postgres:
``pg_advisory_xact_lock``; SQLite: ``BEGIN IMMEDIATE``), re-reading the applied versions
after taking it, so concurrent starts apply every step exactly once.  Applied versions are
rows of ``schema_migrations``.  A database made by the old ``create_tables`` start (tables,
no ``schema_migrations``) is baselined at version 1, the first release, and the later steps
add whatever it lacks.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from peewee import (
    CharField,
    Database,
    DateTimeField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    SqliteDatabase,
)
from playhouse.migrate import SchemaMigrator, migrate

from control.errors import HermesError

STEP_NAME = re.compile(r"^m(\d{4})_(\w+)$")
# Any constant works as long as every process uses the same one: it names the advisory lock
# (https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS).
ADVISORY_LOCK_KEY = 0x4845524D  # "HERM"
# A table of the first release: its presence without ``schema_migrations`` marks a database
# created by the old ``create_tables`` start.
FIRST_RELEASE_TABLE = "tenant"


class SchemaError(HermesError):
    """The control database's schema is not the one this code needs."""

    code = "schema_error"


class SchemaOutOfDate(SchemaError):
    """The control database has pending migrations; run ``hermes db upgrade``."""

    code = "schema_out_of_date"


@dataclass(frozen=True)
class Step:
    """One migration step.

    Attributes:
        version: the step's number (``m0003_x`` -> 3).
        name: the module's name without the prefix (``x``).
        summary: first line of the module docstring.
        upgrade: ``upgrade(migrator, database) -> None``.
    """

    version: int
    name: str
    summary: str
    upgrade: Callable[[SchemaMigrator, Database], None]


class SchemaMigration(Model):
    """A row per applied step (``baseline`` marks steps assumed, not run, on an old database)."""

    version = IntegerField(primary_key=True)
    name = CharField()
    applied_at = DateTimeField()
    baseline = IntegerField(default=0)

    class Meta:
        table_name = "schema_migrations"


def discover_steps() -> list[Step]:
    """Return every step of this package, ordered by version.

    Raises:
        SchemaError: two modules share a version, a version is skipped, or a module lacks
            ``upgrade``.
    """
    steps: dict[int, Step] = {}
    for info in pkgutil.iter_modules(__path__):
        match = STEP_NAME.match(info.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in steps:
            raise SchemaError(f"two migration steps have version {version:04d}: "
                              f"m{version:04d}_{steps[version].name} and {info.name}")
        module = importlib.import_module(f"{__name__}.{info.name}")
        upgrade = getattr(module, "upgrade", None)
        if not callable(upgrade):
            raise SchemaError(f"migration {info.name} defines no upgrade(migrator, database)")
        summary = (module.__doc__ or info.name).strip().splitlines()[0]
        steps[version] = Step(version, match.group(2), summary, upgrade)
    ordered = [steps[v] for v in sorted(steps)]
    for expected, step in enumerate(ordered, start=1):
        if step.version != expected:
            raise SchemaError(f"migration versions must run 1, 2, 3, ...: {expected:04d} is missing")
    return ordered


@contextmanager
def _locked_transaction(database):
    """Run the block in a transaction holding the migration lock for its whole life.

    SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock up front.  Postgres: a
    transaction-scoped advisory lock, released at commit or rollback.
    """
    if isinstance(database, SqliteDatabase):
        with database.atomic("IMMEDIATE"):
            yield
    else:
        with database.atomic():
            if isinstance(database, PostgresqlDatabase):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            yield


def _applied(database) -> dict[int, SchemaMigration]:
    """Applied versions, creating ``schema_migrations`` (and a baseline) when absent.

    Must run inside ``_locked_transaction``.
    """
    with SchemaMigration.bind_ctx(database):
        if not database.table_exists(SchemaMigration._meta.table_name):
            old_database = database.table_exists(FIRST_RELEASE_TABLE)
            database.create_tables([SchemaMigration])
            if old_database:
                SchemaMigration.create(version=1, name="initial", applied_at=_utcnow(), baseline=1)
        return {row.version: row for row in SchemaMigration.select()}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def status(database) -> dict:
    """Describe the database's schema version without changing anything.

    Args:
        database: a connected peewee ``Database``.

    Returns:
        ``{"current": int, "latest": int, "applied": [int], "pending": [Step],
        "baseline": [int]}``; ``current`` is 0 for an empty database.  A database made by the
        old ``create_tables`` start reports version 1 as baseline.
    """
    steps = discover_steps()
    applied: dict[int, bool] = {}
    if database.table_exists(SchemaMigration._meta.table_name):
        with SchemaMigration.bind_ctx(database):
            applied = {row.version: bool(row.baseline) for row in SchemaMigration.select()}
    elif database.table_exists(FIRST_RELEASE_TABLE):
        applied = {1: True}
    return {
        "current": max(applied, default=0),
        "latest": steps[-1].version if steps else 0,
        "applied": sorted(applied),
        "baseline": sorted(v for v, is_baseline in applied.items() if is_baseline),
        "pending": [s for s in steps if s.version not in applied],
    }


def upgrade(database, target: int | None = None) -> list[Step]:
    """Apply every pending step (up to ``target``), each in its own locked transaction.

    Safe to run from several processes at once: each step re-reads the applied versions after
    taking the lock, so a step applied meanwhile by another process is skipped.

    Args:
        database: a peewee ``Database`` (SQLite or Postgres).
        target: highest version to apply; default all.

    Returns:
        The steps this call applied (empty when the database was up to date).

    Raises:
        SchemaError: the step files are inconsistent, or the database has a version this
            code does not know (it was upgraded by newer code).
        peewee.DatabaseError: a step failed; its transaction was rolled back.
    """
    steps = discover_steps()
    known = {s.version for s in steps}
    done: list[Step] = []
    with database.connection_context():
        for step in steps:
            if target is not None and step.version > target:
                break
            with _locked_transaction(database):
                applied = _applied(database)
                unknown = sorted(set(applied) - known)
                if unknown:
                    raise SchemaError(f"database has migration versions {unknown} that this code "
                                      "does not know; it was upgraded by a newer release")
                if step.version in applied:
                    continue
                step.upgrade(SchemaMigrator.from_database(database), database)
                with SchemaMigration.bind_ctx(database):
                    SchemaMigration.create(version=step.version, name=step.name,
                                           applied_at=_utcnow())
            done.append(step)
    return done


def require_current(database) -> None:
    """Raise unless every step is applied (what production processes check at start).

    Raises:
        SchemaOutOfDate: steps are pending; the message names them and the fix.
    """
    with database.connection_context():
        info = status(database)
    if info["pending"]:
        names = ", ".join(f"{s.version:04d} {s.name}" for s in info["pending"])
        raise SchemaOutOfDate(
            f"control database is at schema version {info['current']} of {info['latest']} "
            f"(pending: {names}); run `hermes db upgrade` before starting the web or worker "
            "processes")


def column_names(database, table: str) -> set[str]:
    """Return the names of ``table``'s columns."""
    return {c.name for c in database.get_columns(table)}


def add_column_if_absent(migrator, database, table: str, name: str, field) -> None:
    """Add column ``name`` to ``table`` unless it already exists.

    A ``null=False`` field with a default fills existing rows with the default before the
    ``NOT NULL`` constraint is added (``playhouse.migrate`` behaviour).
    """
    if name not in column_names(database, table):
        migrate(migrator.add_column(table, name, field))


def add_index_if_absent(migrator, database, table: str, columns: tuple[str, ...],
                        unique: bool = False) -> None:
    """Create peewee's default-named index on ``table(columns)`` unless an index with that
    name exists (peewee names it ``<table>_<col>[_<col>]``)."""
    index_name = "_".join((table, *columns))
    if index_name not in {i.name for i in database.get_indexes(table)}:
        migrate(migrator.add_index(table, columns, unique))


__all__ = ["SchemaError", "SchemaOutOfDate", "Step", "add_column_if_absent",
           "add_index_if_absent", "discover_steps", "require_current", "status", "upgrade"]
