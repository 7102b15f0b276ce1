"""A user's own copy of everything their agent keeps, as a zip of documented JSON (issue 23).

``python -m agent.export [IN] [OUT]`` reads a snapshot or a deprovision archive
(``agent.backup``; ``IN`` or ``-`` for stdin), restores it into a temporary directory through
``agent.backup.restore`` (so the same member checks and ``PRAGMA quick_check`` apply) and
writes the zip (``OUT`` or ``-`` for stdout).  The control plane runs it on the tenant's latest
backup or archive and adds the files the user sent (``control.services.export``); it never
imports this module.  Stores are read with plain ``sqlite3``: no embedding model is loaded.

The zip's files are described in ``README.md`` inside it (``FILES`` below is that text); times
are Unix seconds (UTC), costs US cents.  Credentials are left out: the MCP servers file holds the
agent's MCP-proxy token, so only the server names are exported.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import zipfile
from contextlib import closing, suppress
from pathlib import Path
from typing import BinaryIO

from agent.backup import BackupError, restore

_MEMORIES = ("what the agent remembers about you: `id`, `text`, `source` (`user:<message>` for "
             "/remember, `extraction:<message>` when learned from a conversation), `speaker`, "
             "`created_at`, `last_accessed_at`, `access_count`")
_HISTORY = ("the conversation history: `chat` (`<channel>:<chat id>`), `role` (`user` or `assistant`), "
            "`text`, `message_id`, `created_at`; attachments appear as short descriptions "
            "(`[image: photo.jpg]`), the files themselves are under `files/`")
_SUMMARIES = ("summaries of older conversation that no longer fits the context: `chat`, `upto_id` "
              "(the last `history.json` id it covers), `text`")
_CRON = ("scheduled prompts (/cron): `schedule` (5-field cron expression) in `timezone`, `prompt`, "
         "`paused` (0/1), `next_run_at`, `last_run_at`, `note`, and the chat (`channel`, `chat_id`) "
         "the reply goes to")
_GOALS = ("goals (/goal): `objective`, `state` (active, paused, done, stopped, cancelled, failed), "
          "`turns` of `max_turns`, `cost_cents` of `budget_cents`, `note` (the last verdict or why it ended)")
_USAGE = ("every language-model call: `backend`, `model`, `input_tokens`, `output_tokens`, "
          "`cost_cents`, `latency_ms`, `purpose` (`turn`, `extract`, `summary`, `goal_judge`...), `at`")

# (zip name, store, SQL, description): one JSON array of objects per entry, in this order.
TABLES = (
    ("memories.json", "memory.db", ("SELECT id, text, source, speaker, created_at, last_accessed_at, "
                                   "access_count FROM memories ORDER BY id"), _MEMORIES),
    ("history.json", "history.db", ("SELECT id, chat_key AS chat, role, text, envelope_id AS message_id, "
                                   "created_at FROM turns ORDER BY id"), _HISTORY),
    ("history_summaries.json", "history.db",
     "SELECT chat_key AS chat, upto_id, text FROM summaries ORDER BY chat_key", _SUMMARIES),
    ("cron_jobs.json", "cron.db", ("SELECT id, channel, chat_id, expr AS schedule, tz AS timezone, prompt, "
                                  "paused, next_run_at, last_run_at, note, created_at FROM cron_jobs ORDER BY id"),
     _CRON),
    ("goals.json", "goals.db", ("SELECT id, channel, chat_id, objective, state, turns, max_turns, cost_cents, "
                               "budget_cents, note, created_at, updated_at FROM goals ORDER BY id"), _GOALS),
    ("usage.json", "usage.db", ("SELECT backend, model, input_tokens, output_tokens, cost_cents, latency_ms, "
                               "purpose, at FROM llm_calls ORDER BY id"), _USAGE),
)

README_HEAD = """# Your Hermes export

Everything your Hermes agent keeps, as of the backup this export was made from. JSON files are
arrays of objects (or one object), UTF-8; times are Unix seconds (UTC); costs are US cents.

"""


def _rows(data_dir: Path, store: str, sql: str) -> list[dict]:
    """Return the rows of ``sql`` on ``store`` as dicts; [] when the store or table is absent
    (an agent older than the store, or one that never used it)."""
    path = data_dir / store
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute(sql)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def _settings(data_dir: Path) -> dict:
    """The user's settings: dashboard preferences and /model choice, tools allowed without
    asking, and the names (only) of the connected MCP servers."""
    prefs = {row["key"]: row["value"] for row in _rows(data_dir, "history.db", "SELECT key, value FROM prefs")}
    for key, value in prefs.items():
        with suppress(ValueError):  # a plain string preference stays a string
            prefs[key] = json.loads(value)
    allowed: list = []
    permissions = data_dir / "tool_permissions.json"
    if permissions.exists():
        allowed = json.loads(permissions.read_text()).get("always", [])
    servers: list = []
    mcp = data_dir / "mcp_servers.json"
    if mcp.exists():
        servers = sorted(json.loads(mcp.read_text()).get("mcpServers", {}))
    return {"preferences": prefs, "tools_allowed_without_asking": allowed, "mcp_servers": servers}


def write_export(data_dir: str | Path, out: BinaryIO) -> dict:
    """Write the export zip of the agent data dir ``data_dir`` to ``out``.

    Returns:
        ``{zip name: number of items}`` for the JSON files and ``skills`` (files copied).

    Raises:
        sqlite3.DatabaseError: a store cannot be read.
    """
    data = Path(data_dir)
    counts: dict[str, int] = {}
    readme = [README_HEAD]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, store, sql, description in TABLES:
            rows = _rows(data, store, sql)
            archive.writestr(name, json.dumps(rows, indent=2, ensure_ascii=False))
            counts[name] = len(rows)
            readme.append(f"- `{name}`: {description}.\n")
        archive.writestr("settings.json", json.dumps(_settings(data), indent=2, ensure_ascii=False))
        readme.append("- `settings.json`: `preferences` (dashboard settings such as timezone and model, "
                      "and your /model choice), `tools_allowed_without_asking` (/tools allow), "
                      "`mcp_servers` (names of connected services; their credentials are not exported).\n")
        skills = data / "skills"
        counts["skills"] = 0
        for path in sorted(skills.rglob("*")) if skills.is_dir() else []:
            if path.is_file():
                archive.write(path, f"skills/{path.relative_to(skills).as_posix()}")
                counts["skills"] += 1
        readme.append("- `skills/<name>/SKILL.md`: the skills the agent learned, as the original files "
                      "(front matter with name, description and version, then the steps).\n")
        readme.append("- `files/<message id>/<n>-<name>` and `files.json`: the files you sent (photos, "
                      "voice notes, documents) as the originals, added by the service from its file store; "
                      "`files.json` lists `path`, `name`, `mime_type`, `bytes`, `sha256`, `message_id` "
                      "(the `history.json` message it came with) and `stored_at`.\n")
        readme.append("- `api_jobs.json`: the jobs you sent through the Jobs API, as `GET /api/jobs/<id>` "
                      "shows them (`id`, `state`, `prompt`, `priority`, `budget_cents`, `depends_on`, "
                      "`callback_url`, `callback_state`, `result`, `cost_cents`, times in UTC), added by "
                      "the service from its database.\n")
        archive.writestr("README.md", "".join(readme))
    return counts


def export_archive(archive: BinaryIO, out: BinaryIO) -> dict:
    """Restore the snapshot or archive ``archive`` (seekable) into a temporary dir and write
    its export to ``out``; return ``write_export``'s counts.

    Raises:
        BackupError: the archive is unreadable or fails its checks.
    """
    with tempfile.TemporaryDirectory(prefix="hermes-export-") as tmp:
        restore(archive, Path(tmp) / "data")
        return write_export(Path(tmp) / "data", out)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the counts as JSON on stderr; exit 1 on a bad archive."""
    parser = argparse.ArgumentParser(prog="python -m agent.export", description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", default="-", help="snapshot or archive .tar.gz, - for stdin")
    parser.add_argument("out", nargs="?", default="-", help="the zip to write, - for stdout")
    args = parser.parse_args(argv)
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as spool, \
            tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as zipped:
        source = sys.stdin.buffer if args.archive == "-" else open(args.archive, "rb")  # noqa: SIM115
        with source:
            while chunk := source.read(1024 * 1024):
                spool.write(chunk)
        spool.seek(0)
        try:
            counts = export_archive(spool, zipped)  # type: ignore[arg-type]
        except BackupError as exc:
            sys.stderr.write(f"export refused: {exc}\n")
            return 1
        zipped.seek(0)
        target = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
        with target:
            while chunk := zipped.read(1024 * 1024):
                target.write(chunk)
    sys.stderr.write(json.dumps(counts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
