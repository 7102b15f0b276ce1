"""Control-database migrations on SQLite and PostgreSQL: a first-release database with rows is
upgraded in place, fresh databases end at exactly the models' schema, concurrent upgrades are
safe, and production processes refuse a database that was not upgraded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest
from playhouse.db_url import connect

from control import create_app, migrations
from control.db import connect_database
from control.migrations import m0001_initial as first_release

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "postgres://postgres@127.0.0.1:5432/test"


@pytest.fixture
def extra_postgres():
    """Create throwaway PostgreSQL databases on demand; drop them afterwards."""
    names = []

    def make() -> str:
        name = f"hermes_mig_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=3)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        names.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield make
    conn = psycopg2.connect(POSTGRES_ADMIN)
    conn.autocommit = True
    for name in names:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def database_url(db_backend, extra_postgres):
    """These tests build old schemas themselves: an empty database, not the migrated template."""
    return extra_postgres() if db_backend == "postgres" else ""


def _scratch_url(settings, db_backend, extra_postgres, name: str) -> str:
    """A second empty database on the same backend as ``settings``."""
    if db_backend == "postgres":
        return extra_postgres()
    return f"sqlite:///{Path(settings.data_dir) / name}"


def _plain_connect(url: str):
    """A connection of its own (no pool, not the shared proxy): one per simulated process."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return connect(url, pragmas={"busy_timeout": 30000, "foreign_keys": 1})
    return connect(url)


def _schema(db) -> dict:
    """Every table's columns, indexes and foreign keys, comparable across databases."""
    tables = sorted(t for t in db.get_tables() if t != "schema_migrations")
    return {
        table: {
            "columns": {c.name: (c.data_type.lower(), c.null, c.primary_key)
                        for c in db.get_columns(table)},
            "indexes": {(i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table)},
            "foreign_keys": {(f.column, f.dest_table, f.dest_column)
                             for f in db.get_foreign_keys(table)},
        }
        for table in tables
    }


def _build_first_release(url: str) -> None:
    """What the first release's ``create_tables`` start left behind: its tables with rows, and
    no ``schema_migrations`` table."""
    db = _plain_connect(url)
    with db.connection_context(), db.bind_ctx(first_release.MODELS):
        db.create_tables(first_release.MODELS)
        now = datetime(2026, 11, 21, 6, 0)
        tenant = first_release.Tenant.create(email="ada@example.com", plan="light", status="active",
                                             created_at=now, updated_at=now)
        first_release.Machine.create(tenant=tenant, plan="light", state="ready", requested_at=now,
                                     ready_at=now, updated_at=now)
        first_release.Message.create(tenant=tenant, envelope_id="env-1", direction="in",
                                     channel="telegram", chat_id="42", text="hello", created_at=now)
        first_release.Delivery.create(envelope_id="env-1", tenant=tenant, channel="telegram",
                                      chat_id="42", platform_message_id="7", last_text="hi Ada",
                                      state="delivered", created_at=now, delivered_at=now)
    db.close()


def test_first_release_database_keeps_its_rows_and_gains_the_new_columns(settings):
    _build_first_release(settings.database_url)
    db = connect_database(settings.database_url)
    with db.connection_context():
        before = migrations.status(db)
        assert before["current"] == 1 and before["baseline"] == [1]
        assert [s.version for s in before["pending"]] == list(range(2, before["latest"] + 1))

        applied = migrations.upgrade(db)

        assert [s.version for s in applied] == [s.version for s in before["pending"]]
        from control.models import Delivery, Machine, Message, Tenant

        ada = Tenant.get(Tenant.email == "ada@example.com")
        assert Machine.get(Machine.tenant == ada).state == "ready"
        delivery = Delivery.get(Delivery.envelope_id == "env-1")
        assert (delivery.last_text, delivery.state, delivery.platform_message_id) == (
            "hi Ada", "delivered", "7")
        assert delivery.chunk_message_ids == ""
        assert (delivery.reply_to, delivery.pending_text, delivery.pending_after) == (None, None, None)
        assert Message.get(Message.envelope_id == "env-1").text == "hello"
        # Since m0002 a control-plane answer to an unlinked chat is logged without a tenant.
        Message.create(tenant=None, envelope_id="control-1", direction="out", channel="telegram",
                       chat_id="99", text="link first")
        assert migrations.status(db)["pending"] == []


def test_every_path_ends_at_exactly_the_models_schema(settings, db_backend, extra_postgres):
    from control.models import ALL_MODELS

    _build_first_release(settings.database_url)
    fresh_url = _scratch_url(settings, db_backend, extra_postgres, "fresh.db")
    models_url = _scratch_url(settings, db_backend, extra_postgres, "models.db")
    upgraded, fresh, reference = (_plain_connect(u) for u in
                                  (settings.database_url, fresh_url, models_url))
    migrations.upgrade(upgraded)
    migrations.upgrade(fresh)
    with reference.connection_context(), reference.bind_ctx(ALL_MODELS):
        reference.create_tables(ALL_MODELS)

    expected = _schema(reference)
    assert _schema(fresh) == expected
    assert _schema(upgraded) == expected
    for db in (upgraded, fresh, reference):
        db.close()


def test_second_upgrade_applies_nothing(settings):
    db = _plain_connect(settings.database_url)
    first = migrations.upgrade(db)
    assert [s.version for s in first] == [s.version for s in migrations.discover_steps()]

    assert migrations.upgrade(db) == []
    with db.connection_context():
        rows = db.execute_sql("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [s.version for s in first]
    db.close()


@pytest.mark.parametrize("old_database", [False, True], ids=["fresh", "first-release"])
def test_concurrent_upgrades_apply_each_step_exactly_once(settings, old_database):
    if old_database:
        _build_first_release(settings.database_url)
    starters = 4
    barrier = threading.Barrier(starters)
    applied: list[int] = []
    errors: list[BaseException] = []

    def start():
        db = _plain_connect(settings.database_url)
        try:
            barrier.wait(timeout=30)
            applied.extend(s.version for s in migrations.upgrade(db))
        except Exception as exc:  # noqa: BLE001 - every thread's outcome is asserted below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    latest = migrations.discover_steps()[-1].version
    expected = list(range(2 if old_database else 1, latest + 1))
    assert sorted(applied) == expected
    db = _plain_connect(settings.database_url)
    with db.connection_context():
        assert migrations.status(db)["pending"] == []
    db.close()


def _hermes(settings, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HERMES_DATA_DIR": settings.data_dir, "DATABASE_URL": settings.database_url,
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_production_app_refuses_to_start_until_hermes_db_upgrade_ran(settings):
    _build_first_release(settings.database_url)

    with pytest.raises(migrations.SchemaOutOfDate, match="run `hermes db upgrade`"):
        create_app(settings)
    status = _hermes(settings, "db", "status")
    assert status.returncode == 1
    assert "schema version 1 of" in status.stdout and "pending 0002" in status.stdout

    upgrade = _hermes(settings, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "applied 0002 delivery_send_intent" in upgrade.stdout

    assert _hermes(settings, "db", "status").returncode == 0
    again = _hermes(settings, "db", "upgrade")
    assert "applied" not in again.stdout and "up to date" in again.stdout
    app = create_app(settings)
    try:
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        app.extensions["hermes"].close()


def test_worker_refuses_an_empty_database_with_the_fix_in_its_message(settings):
    worker = _hermes(settings, "worker")
    assert worker.returncode != 0
    assert "hermes db upgrade" in worker.stderr


def test_two_steps_with_one_version_fail_loudly(tmp_path, monkeypatch):
    package = tmp_path / "steps"
    package.mkdir()
    for name in ("m0001_a", "m0002_b", "m0002_c"):
        (package / f"{name}.py").write_text('"""x."""\n\ndef upgrade(migrator, database):\n    pass\n')
    monkeypatch.setattr(migrations, "__path__", [str(package)])
    with pytest.raises(migrations.SchemaError, match="two migration steps have version 0002"):
        migrations.discover_steps()
