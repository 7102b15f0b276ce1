"""Control-plane fixtures: an app on a temp data dir, against SQLite or a real PostgreSQL."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg2
import pytest
from support.redis_server import RedisServer
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET

from control import create_app
from control.db import database, init_database
from control.runtime import Runtime
from control.settings import Settings

POSTGRES_ADMIN = "postgres://postgres@127.0.0.1:5432/test"


def _admin():
    try:
        conn = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    conn.autocommit = True
    return conn


def _migrate(url: str) -> None:
    """Bring the database at ``url`` to the current schema, then let go of every connection."""
    db = init_database(url)
    close_all = getattr(db, "close_all", None)
    if close_all is not None:
        close_all()
    db.close()


@pytest.fixture(scope="session")
def postgres_template(worker_id):
    """A database migrated once per session (and pytest-xdist worker); tests clone it.

    ``CREATE DATABASE ... TEMPLATE`` copies the migrated schema in milliseconds instead of
    running every migration per test (PostgreSQL docs, "Template Databases").
    """
    name = f"hermes_template_{worker_id}_{uuid.uuid4().hex[:6]}"
    conn = _admin()
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    _migrate(f"postgresql://postgres@127.0.0.1:5432/{name}")
    yield name
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A control database file migrated once per session; tests copy it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "control.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request):
    """Run the test on SQLite and on PostgreSQL (peewee's habit: a real backend per run)."""
    return request.param


@pytest.fixture
def database_url(request, db_backend, tmp_path):
    """A migrated, empty control database of ``db_backend`` for this test only."""
    if db_backend == "sqlite":
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), data / "control.db")
        yield ""  # Settings' default: sqlite:///<data_dir>/control.db
        return
    template = request.getfixturevalue("postgres_template")
    name = f"hermes_test_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    conn.cursor().execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    database.close()
    close_all = getattr(database.obj, "close_all", None)
    if close_all is not None:
        close_all()
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def private_redis_url(tmp_path):
    """Admin URL of a private redis-server (``support.redis_server``: an aclfile, so tenant
    users can be saved, and roles/redis's ``proto-max-bulk-len``)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server.admin_url
    server.stop()


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(data_dir=str(tmp_path / "data"), database_url=database_url,
                    stripe_webhook_secret=STRIPE_SECRET, telegram_webhook_secret=TELEGRAM_SECRET,
                    telegram_bot_token="123456:TEST", stripe_price_plans={"price_heavy_eur": "heavy"})


@pytest.fixture
def app(settings):
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    yield app
    app.extensions["hermes"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["hermes"]




@pytest.fixture
def tenant(runtime):
    """A paying tenant whose machine is ready."""
    from control.models import Machine, Tenant, utcnow

    with database.connection_context():
        tenant = Tenant.create(email="ada@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="ready", ready_at=utcnow())
        return tenant
