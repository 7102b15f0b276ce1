"""``current_time``: the current date and time in an IANA zone."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.tools.registry import ToolContext, ToolError, tool


@tool("current_time", "Return the current date, time and weekday, in the given IANA time zone "
      "(e.g. Europe/Berlin; default the user's zone).",
      {"type": "object", "properties": {"tz": {"type": "string", "description": "IANA zone"}}})
def current_time(args: dict, ctx: ToolContext) -> str:
    """Return ``YYYY-MM-DD HH:MM:SS Weekday (Zone, UTC+hh:mm)``; the clock is the ``now`` service."""
    zone_name = args.get("tz") or ctx.services.get("default_tz") or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(f"unknown time zone {zone_name!r}") from exc
    now = ctx.services.get("now", time.time)()
    moment = datetime.fromtimestamp(now, UTC).astimezone(zone)
    return moment.strftime(f"%Y-%m-%d %H:%M:%S %A ({zone_name}, UTC%z)")
