"""Slash commands, answered without the LLM (dispatch dict ``HANDLERS``).

``/help``, ``/start``, ``/remember``, ``/forget``, ``/memory``, ``/cron``, ``/goal``, ``/skills``,
``/model``, ``/tools``, ``/usage``, ``/status``, ``/reset``, ``/stop``.  Unknown commands get the help text, never the
LLM, and no command makes a paid LLM call.  ``/cmd@botname`` (Telegram groups) is accepted.
Their names, summaries and usage lines (``/help``, the bot menus) are ``wire.commands``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.cron import ScheduleError
from agent.goals import GoalError
from agent.history import History
from agent.mcp_client.listing import chat_listing
from agent.memory import MemoryRejected
from wire.commands import HELP
from wire.protocol import Envelope

COMMAND_RE = re.compile(r"^/([A-Za-z_]+)(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)
CRON_ADD_RE = re.compile(r"""^add\s+(["'])(.+?)\1\s+(?:tz=(\S+)\s+)?(.+)$""", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """A parsed command: the ``envelope``, its ``name`` (lowercase, no slash) and ``args`` text."""

    envelope: Envelope
    name: str
    args: str

    @property
    def chat_key(self) -> str:
        """The history key of the chat the command came from."""
        return History.chat_key(self.envelope.channel, self.envelope.chat_id)


def is_command(text: str | None) -> bool:
    """Return True when ``text`` is a slash command."""
    return text is not None and COMMAND_RE.match(text.strip()) is not None


def parse(envelope: Envelope) -> Command:
    """Parse the envelope's text (call only when ``is_command``)."""
    match = COMMAND_RE.match(envelope.text.strip())
    if match is None:
        raise ValueError(f"not a command: {envelope.text[:40]!r}")
    return Command(envelope, match.group(1).lower(), (match.group(2) or "").strip())


def dispatch(runtime, envelope: Envelope) -> str:
    """Run the command in ``envelope``; return the reply text."""
    command = parse(envelope)
    handler = HANDLERS.get(command.name, cmd_unknown)
    return handler(runtime, command)


def cmd_help(runtime, command: Command) -> str:
    """List the commands."""
    return HELP


def cmd_unknown(runtime, command: Command) -> str:
    """Unknown command: say so and show the help."""
    return f"I don't know /{command.name}.\n\n{HELP}"


def cmd_start(runtime, command: Command) -> str:
    """Greet a new user."""
    return ("Hi! I'm Hermes, your personal AI agent, running on your own server. Talk to me normally; "
            "I remember what matters, learn skills from longer tasks and can run scheduled jobs.\n\n" + HELP)


def cmd_remember(runtime, command: Command) -> str:
    """Store ``args`` as a memory (screened for instruction-like text, merged with duplicates)."""
    if not command.args:
        return "Usage: /remember TEXT"
    try:
        memory_id, merged = runtime.memory().remember(command.args, source=f"user:{command.envelope.id}")
    except MemoryRejected as exc:
        return f"I didn't store that: {exc}"
    return f"Updated memory #{memory_id}." if merged else f"Remembered (#{memory_id})."


def cmd_forget(runtime, command: Command) -> str:
    """Forget memory ``#ID`` or the memories matching a query."""
    if not command.args:
        return "Usage: /forget QUERY or /forget ID"
    store = runtime.memory()
    if re.fullmatch(r"#?\d+", command.args):
        memory_id = int(command.args.lstrip("#"))
        return f"Forgot memory #{memory_id}." if store.forget(memory_id) else f"No memory #{memory_id}."
    gone = store.forget_matching(command.args)
    if not gone:
        return f"No memory matches \"{command.args}\"."
    return "Forgot:\n" + "\n".join(f"#{m.id} {m.text}" for m in gone)


def cmd_memory(runtime, command: Command) -> str:
    """List recent memories, or the top 5 for a query."""
    store = runtime.memory()
    items = store.search(command.args, k=5) if command.args else store.list_recent(10)
    if not items:
        return "No matching memories." if command.args else "I don't remember anything yet."
    title = f"Memories matching \"{command.args}\":" if command.args else "Recent memories:"
    return title + "\n" + "\n".join(f"#{m.id} {m.text}" for m in items)


def cmd_cron(runtime, command: Command) -> str:
    """``/cron add|list|pause|resume|remove``."""
    verb = command.args.split(maxsplit=1)[0].lower() if command.args else "list"
    store = runtime.cron
    if verb == "list":
        jobs = store.list()
        return "\n".join(j.describe() for j in jobs) if jobs else "No cron jobs. Add one with /cron add."
    if verb == "add":
        match = CRON_ADD_RE.match(command.args)
        if not match:
            return 'Usage: /cron add "<min hour day month weekday>" [tz=Area/City] PROMPT'
        _, expr, tz, prompt = match.groups()
        try:
            job = store.add(command.envelope.channel, command.envelope.chat_id, expr.strip(),
                            tz or runtime.preferences().timezone, prompt)
        except ScheduleError as exc:
            return f"I couldn't schedule that: {exc}"
        return f"Scheduled {job.describe()}"
    actions = {"pause": store.pause, "resume": store.resume, "remove": store.remove}
    if verb not in actions:
        return "Usage: /cron add|list|pause ID|resume ID|remove ID"
    _, _, rest = command.args.partition(" ")
    if not rest.strip().lstrip("#").isdigit():
        return f"Usage: /cron {verb} ID (see /cron list)"
    job_id = int(rest.strip().lstrip("#"))
    done = actions[verb](job_id)
    if not done:
        return f"No cron job #{job_id}."
    if verb == "resume":
        return f"Resumed {done.describe()}"
    return f"Paused #{job_id}." if verb == "pause" else f"Removed #{job_id}."


def cmd_goal(runtime, command: Command) -> str:
    """``/goal OBJECTIVE`` starts a goal in this chat (``agent.goal_runner`` pursues it);
    ``/goal [status]``, ``/goal pause|resume|cancel`` act on the chat's open goal."""
    goals, env = runtime.goals, command.envelope
    verb = command.args.lower()
    if verb in ("", "status"):
        goal = goals.open_in(env.channel, env.chat_id) or goals.latest_in(env.channel, env.chat_id)
        return goal.describe() if goal else "No goal here yet. Start one with /goal OBJECTIVE."
    if verb in ("pause", "resume", "cancel"):
        goal = goals.open_in(env.channel, env.chat_id)
        if goal is None:
            return "There is no open goal here. Start one with /goal OBJECTIVE."
        if verb == "pause":
            done = goals.set_state(goal.id, "paused", only_from=("active",))
            if done is None:
                return f"Goal #{goal.id} is already paused."
            return f"Paused goal #{goal.id}; /goal resume continues it."
        if verb == "cancel":
            goals.set_state(goal.id, "cancelled", "cancelled by you")
            return f"Cancelled goal #{goal.id} after {goal.turns} turns (${goal.cost_cents / 100:.4f})."
        if runtime.schedule_goal is None:
            return "Goals need my task queue, which is not running here."
        if goals.set_state(goal.id, "active", only_from=("paused",)) is None:
            return f"Goal #{goal.id} is already active."
        runtime.schedule_goal(goal.id)
        return f"Resumed goal #{goal.id}."
    if runtime.schedule_goal is None:
        return "Goals need my task queue, which is not running here."
    config = runtime.config
    try:
        goal = goals.create(env.channel, env.chat_id, command.args, config.goal_max_turns,
                            config.goal_budget_cents)
    except GoalError as exc:
        return str(exc)
    runtime.schedule_goal(goal.id)
    return (f"Goal #{goal.id} set: {goal.objective}\nI'll work on it on my own, for up to {goal.max_turns} "
            f"turns or ${goal.budget_cents / 100:.2f}, and report as I go. Writing to me pauses it "
            "while I answer; /goal status|pause|resume|cancel.")


def cmd_skills(runtime, command: Command) -> str:
    """``/skills [list|show NAME|delete NAME]``."""
    verb, _, name = command.args.partition(" ")
    verb, name = (verb or "list").lower(), name.strip()
    library = runtime.skills
    if verb == "list":
        skills = library.list()
        if not skills:
            return "I haven't learned any skills yet; they come from tasks that take several steps."
        return "Skills:\n" + "\n".join(f"{s.name} (v{s.version}): {s.description}" for s in skills)
    if verb in ("show", "delete") and name:
        skill = library.get(name)
        if skill is None:
            return f"No skill named {name}."
        if verb == "show":
            return skill.document
        library.delete(name)
        return f"Deleted skill {name}."
    return "Usage: /skills [list|show NAME|delete NAME]"


PRICED_BACKENDS = ("anthropic",)
"""Backends whose every call is billed by the provider: a ``/model`` choice there needs a price."""


def model_refusal(router, choice: str) -> str | None:
    """Return why ``choice`` (``backend``, ``backend:model`` or ``model``) cannot be used, or None.

    The rules of ``/model``, also applied to the dashboard's model setting
    (``agent.preferences``): the backend must exist, and a model on a priced backend needs a
    price, since an unpriced model would cost nothing on the ledger and the daily budget could
    not stop it (``HERMES_PRICES_JSON`` adds prices for models the table lacks).
    """
    names = {b.name for b in router.backends}
    backend = choice.partition(":")[0]
    if ":" in choice and backend not in names:
        return f"No backend {backend}; available: {', '.join(sorted(names))}."
    first, model = router.ordered_for(choice)[0]
    if first.name in PRICED_BACKENDS and not router.is_paid(first, model):
        return (f"No price is known for {model or first.model}, so it cannot count against "
                "your daily budget; choose a listed model or ask the operator to price it.")
    return None


def cmd_model(runtime, command: Command) -> str:
    """Show the model chain, or set/clear the tenant's choice (``backend``, ``backend:model``, ``model``)."""
    router = runtime.router
    choice = command.args
    if choice.lower() in ("default", "reset", "auto"):
        runtime.history.set_pref("model", None)
        return "Model choice cleared; using the default chain."
    if choice:
        refusal = model_refusal(router, choice)
        if refusal is not None:
            return refusal
        runtime.history.set_pref("model", choice)
        first, model = router.ordered()[0]
        return f"Now using {first.name} ({model or first.model})."
    current = runtime.history.pref("model") or "default"
    chain = ", ".join(f"{b.name} ({b.model}{', paid' if router.is_paid(b) else ', free'})"
                      for b in router.backends)
    return (f"Model choice: {current}\nChain ({router.policy}): {chain}\n"
            "Set with /model NAME, clear with /model default.")


def cmd_tools(runtime, command: Command) -> str:
    """``/tools`` lists the tools; ``/tools allow NAME`` stops the confirmation question for a
    tool that writes; ``/tools ask NAME`` brings it back (``agent.tools.permissions``)."""
    verb, _, name = command.args.partition(" ")
    verb, name = verb.lower(), name.strip()
    permissions = runtime.tool_permissions
    if not verb:
        return chat_listing(runtime.registry, runtime.mcp.status(), permissions.always())
    if verb == "allow" and name:
        tool = runtime.registry.get(name)
        if tool is None:
            return f"I have no tool {name}; /tools lists them."
        if not tool.confirm:
            return f"{name} never asks first; there is nothing to allow."
        permissions.allow(name)
        return f"{name} is allowed: I will use it without asking first. /tools ask {name} undoes this."
    if verb == "ask" and name:
        if permissions.revoke(name):
            return f"I will ask before using {name} again."
        return f"{name} was not on the allowed list."
    return "Usage: /tools, /tools allow NAME or /tools ask NAME"


def cmd_usage(runtime, command: Command) -> str:
    """Tokens and cost today (UTC) and this month, the budget left, and today's spend by goal
    and by job."""
    today = runtime.usage.totals(runtime.tenant)
    month = runtime.usage.totals(runtime.tenant, month=True)
    left = runtime.router.budget_left_cents()
    lines = [_usage_line("Today", today), _usage_line("This month", month)]
    if left is not None:
        lines.append(f"Daily budget: ${runtime.config.daily_budget_cents / 100:.2f}, "
                     f"${max(0.0, left) / 100:.2f} left today.")
    return "\n".join(lines + _spend_by(runtime))


def _spend_by(runtime) -> list[str]:
    """Lines of today's spend by goal and by job (issue 23), empty when none had any."""
    lines = []
    by_goal = runtime.usage.today_by(runtime.tenant, "goal_id")
    if by_goal:
        lines.append("Today by goal:")
        for goal_id, calls, cents in by_goal:
            goal = runtime.goals.get(int(goal_id))
            title = goal.objective if goal is not None else "(deleted)"
            title = title if len(title) <= 40 else title[:39] + "…"
            lines.append(f"- Goal #{goal_id} {title}: {calls} calls, ${cents / 100:.4f}")
    by_job = runtime.usage.today_by(runtime.tenant, "job_id")
    if by_job:
        lines.append("Today by job:")
        lines += [f"- Job {job_id}: {calls} calls, ${cents / 100:.4f}" for job_id, calls, cents in by_job]
    return lines


def _usage_line(label: str, totals: dict) -> str:
    return (f"{label}: {totals['calls']} calls, {totals['input_tokens']} tokens in, "
            f"{totals['output_tokens']} out, ${totals['cost_cents'] / 100:.4f}")


def cmd_status(runtime, command: Command) -> str:
    """Tenant, model chain with circuit states, counts of memories, skills and cron jobs."""
    router = runtime.router
    chain = ", ".join(f"{b.name}:{b.model} [{router.breakers[id(b)].current_state}]" for b in router.backends)
    try:
        memories = str(runtime.memory().count())
    except Exception as exc:  # noqa: BLE001 - status must answer even when memory is broken
        memories = f"unavailable ({type(exc).__name__})"
    jobs = runtime.cron.list()
    active = sum(1 for j in jobs if not j.paused)
    return (f"Agent for tenant {runtime.tenant}: up.\nModels: {chain}\nMemories: {memories}\n"
            f"Skills: {len(runtime.skills.list())}\nCron jobs: {len(jobs)} ({active} active)")


def cmd_reset(runtime, command: Command) -> str:
    """Start a new conversation in this chat (memories and skills stay)."""
    runtime.history.clear(command.chat_key)
    return "New conversation started. I still remember what you asked me to remember."


def cmd_stop(runtime, command: Command) -> str:
    """Ask the running reply in this chat to stop."""
    running = runtime.inbox.running_in(command.chat_key)
    runtime.inbox.request_stop(command.chat_key)
    return "Stopping the current reply." if running else "Nothing is running right now."


# One handler per command of wire.commands.COMMANDS, in that order.
HANDLERS = {
    "help": cmd_help, "start": cmd_start, "remember": cmd_remember, "forget": cmd_forget,
    "memory": cmd_memory, "cron": cmd_cron, "goal": cmd_goal, "skills": cmd_skills, "model": cmd_model,
    "tools": cmd_tools,
    "usage": cmd_usage, "status": cmd_status, "reset": cmd_reset, "stop": cmd_stop,
}
