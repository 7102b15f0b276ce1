"""Control-plane fixtures: an app on a temp data dir, against SQLite or a real PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg2
import pytest
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET

from control import create_app
from control.db import database
from control.runtime import Runtime
from control.settings import Settings

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_url() -> str:
    """Create a throwaway schema-free database on the local server; skip if it is down."""
    name = f"hermes_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(POSTGRES_ADMIN.replace("postgresql://", "postgres://"), connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop_postgres(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(POSTGRES_ADMIN.replace("postgresql://", "postgres://"))
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request):
    """Run the test on SQLite and on PostgreSQL (peewee's habit: a real backend per run)."""
    return request.param


@pytest.fixture
def settings(tmp_path, db_backend):
    url = _postgres_url() if db_backend == "postgres" else ""
    yield Settings(data_dir=str(tmp_path / "data"), database_url=url,
                   stripe_webhook_secret=STRIPE_SECRET, telegram_webhook_secret=TELEGRAM_SECRET,
                   telegram_bot_token="123456:TEST", stripe_price_plans={"price_heavy_eur": "heavy"})
    if url:
        database.close()
        _drop_postgres(url)


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
