"""Data export (issue 23): the signed-in user's ``GET /dashboard/export`` and an archived
tenant's export give one zip with memories, skills, cron jobs, goals, history, settings and the
files the user sent, as documented JSON and the original files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from support.dashboard import make_ready, sign_in

from agent.cron import CronStore
from agent.goals import GoalStore
from agent.history import History
from agent.memory import MemoryStore
from control.db import database
from control.models import Job, Machine, Tenant
from control.providers.archive import archive_directory, archive_key
from control.services import backups, media
from control.services.export import export_tenant

PDF = b"%PDF-1.4\n% an invoice\n"


def _agent_with_data(settings, tenant_id: int, embedder=None) -> Path:
    """The tenant's local agent data dir, written through the agent's own stores."""
    data = Path(settings.agents_dir) / str(tenant_id)
    History(data / "history.db").record_exchange("telegram:42", "env-1", "my cat is called Miso", "Noted!")
    store = MemoryStore(data / "memory.db")
    store.remember("The user's cat is called Miso", source="user:env-1")
    store.close()
    CronStore(data / "cron.db", str(tenant_id)).add("telegram", "42", "0 8 * * *", "Europe/Paris", "Daily news")
    GoalStore(data / "goals.db").create("telegram", "42", "plan a trip to Lyon", 20, 50.0)
    (data / "skills" / "brew-tea").mkdir(parents=True)
    (data / "skills" / "brew-tea" / "SKILL.md").write_text("---\nname: brew-tea\n---\nsteep 3 minutes\n")
    with database.connection_context():
        Job.create(tenant=tenant_id, public_id=f"job_{tenant_id}a", envelope_id=f"env-job-{tenant_id}",
                   prompt="summarise my week", budget_cents=50.0, state="done", result="A calm week.",
                   cost_cents=0.2)
    media.store_from_settings(settings).put_bytes(
        media.media_key(settings.env, str(tenant_id), "env-1", 0), PDF,
        {"content-type": "application/pdf", "name": "invoice%20march.pdf", "sha256": "x"})
    return data


def _check(zipped: bytes) -> None:
    archive = zipfile.ZipFile(io.BytesIO(zipped))
    names = set(archive.namelist())
    read = lambda name: json.loads(archive.read(name))  # noqa: E731
    assert [m["text"] for m in read("memories.json")] == ["The user's cat is called Miso"]
    assert [(t["chat"], t["role"], t["text"]) for t in read("history.json")] == [
        ("telegram:42", "user", "my cat is called Miso"), ("telegram:42", "assistant", "Noted!")]
    [job] = read("cron_jobs.json")
    assert (job["schedule"], job["timezone"], job["prompt"]) == ("0 8 * * *", "Europe/Paris", "Daily news")
    assert [g["objective"] for g in read("goals.json")] == ["plan a trip to Lyon"]
    assert archive.read("skills/brew-tea/SKILL.md").endswith(b"steep 3 minutes\n")
    [file] = read("files.json")
    assert file["name"] == "invoice march.pdf" and archive.read(file["path"]) == PDF
    [api_job] = read("api_jobs.json")
    assert (api_job["prompt"], api_job["state"], api_job["result"]) == (
        "summarise my week", "done", "A calm week.")
    assert "settings.json" in names and "usage.json" in names
    readme = archive.read("README.md").decode()
    for name in ("memories.json", "history.json", "cron_jobs.json", "goals.json", "settings.json",
                 "skills/", "files.json", "api_jobs.json"):
        assert f"`{name}" in readme, name


def test_the_signed_in_user_downloads_a_zip_of_everything(client, settings):
    tenant = sign_in(client, "ada@example.com")
    make_ready(tenant)
    _agent_with_data(settings, tenant.id)

    answer = client.get("/dashboard/export")

    assert answer.status_code == 200, answer.text
    assert answer.mimetype == "application/zip"
    assert f"hermes-export-{tenant.id}-" in answer.headers["Content-Disposition"]
    _check(answer.data)
    # The export took a fresh backup through the nightly path: it is now the latest one.
    assert backups.latest_tenant_backup(backups.store_from_settings(settings), str(tenant.id))


def test_an_archived_tenant_is_exported_from_its_archive(runtime, settings):
    with database.connection_context():
        tenant = Tenant.create(email="gone@example.com", plan="light", status="cancelled")
        data = _agent_with_data(settings, tenant.id)
        key = archive_key(settings.env, str(tenant.id))
        archive_directory(backups.store_from_settings(settings), data, key)
        Tenant.update(archive_key=key).where(Tenant.id == tenant.id).execute()
        for path in sorted(data.rglob("*"), reverse=True):  # the machine and its data are gone
            path.rmdir() if path.is_dir() else path.unlink()
        assert Machine.get_or_none(Machine.tenant == tenant) is None

        made = export_tenant(settings, Tenant.get_by_id(tenant.id))

    assert made.source == key
    _check(made.data)


def test_export_before_any_backup_is_a_clear_404(client):
    sign_in(client, "new@example.com")
    answer = client.get("/dashboard/export")
    assert answer.status_code == 404 and "no backup" in answer.text.lower()
