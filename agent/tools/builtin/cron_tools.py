"""``cron_add`` and ``cron_list``: scheduled prompts whose answers arrive in this chat."""

from __future__ import annotations

from agent.cron import ScheduleError
from agent.tools.registry import ToolContext, ToolError, tool


@tool("cron_add", "Schedule a prompt to run on a 5-field cron schedule (minute hour day month "
      "weekday) in an IANA time zone; the answer is sent to this chat each time.",
      {"type": "object", "properties": {
          "schedule": {"type": "string", "description": "e.g. '0 8 * * 1-5'"},
          "prompt": {"type": "string", "description": "what to do each time"},
          "tz": {"type": "string", "description": "IANA zone, e.g. Europe/Berlin"}},
       "required": ["schedule", "prompt"]})
def cron_add(args: dict, ctx: ToolContext) -> str:
    """Create the job; return its description.

    Raises:
        ToolError: invalid schedule, zone or empty prompt.
    """
    tz = args.get("tz") or ctx.services.get("default_tz") or "UTC"
    try:
        job = ctx.service("cron").add(ctx.channel, ctx.chat_id, str(args.get("schedule", "")), tz,
                                      str(args.get("prompt", "")))
    except ScheduleError as exc:
        raise ToolError(str(exc)) from exc
    return f"Scheduled {job.describe()}"


@tool("cron_list", "List the user's scheduled cron jobs.", {"type": "object", "properties": {}})
def cron_list(args: dict, ctx: ToolContext) -> str:
    """Return one line per job, or a note that there are none."""
    jobs = ctx.service("cron").list()
    return "\n".join(job.describe() for job in jobs) if jobs else "No cron jobs."
