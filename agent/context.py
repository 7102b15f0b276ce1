"""Context assembly under a token budget: system prompt, top-5 memories, a matched skill, recent
history — and a summary of older history when it does not fit.

Token counts are estimated at 4 characters per token (OpenAI's and Anthropic's rule of thumb
for English text); the budget keeps a margin (``SAFETY``) for that error.  History is taken
newest first until the budget is used; older turns are folded into a running summary stored
per chat (``History.save_summary``), so each turn summarises only what newly fell out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.history import History

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are Hermes, the user's personal AI agent. You run on the user's own server and talk "
    "with them in a chat app. Be helpful, concise and friendly; answer in the user's language. "
    "Use your tools when they help; if a tool fails, say so briefly and carry on."
)
MEMORY_K = 5
CHARS_PER_TOKEN = 4
SAFETY = 0.9  # use 90 % of the budget: the estimate is rough
SUMMARY_PROMPT = (
    "Summarise this earlier part of a chat between a user and their assistant in at most 200 words. "
    "Keep names, facts, decisions, open tasks and the user's preferences; drop small talk.\n\n{text}"
)


# Anthropic's vision guide: about width × height / 750 tokens, images being scaled to at most
# ~1.15 megapixels, so at most ~1600 (https://docs.anthropic.com/en/docs/build-with-claude/vision).
TOKENS_PER_IMAGE = 1600


def estimate_tokens(text: str) -> int:
    """Return an estimate of the tokens in ``text`` (4 characters per token, at least 1)."""
    return len(text) // CHARS_PER_TOKEN + 1


def content_tokens(content: str | list[dict]) -> int:
    """Return an estimate of the tokens of a message ``content``: text as ``estimate_tokens``,
    each ``image`` block ``TOKENS_PER_IMAGE``."""
    if isinstance(content, str):
        return estimate_tokens(content)
    return sum(TOKENS_PER_IMAGE if b.get("type") == "image" else estimate_tokens(b.get("text", ""))
               for b in content)


@dataclass
class AssembledContext:
    """What one model call of a turn starts from.

    Attributes:
        system: the system prompt with memories, skill and summary sections.
        messages: recent history plus the user's message.
        memories: the memory items put in context (``.id``, ``.text``, ...).
        skill: the matched skill (``agent.skills.Skill``) or None; skill_score: its similarity.
        summarised: how many older turns the summary covers in this call (0 = none needed).
        tokens: estimated input tokens.
    """

    system: str
    messages: list[dict]
    memories: list = field(default_factory=list)
    skill: object = None
    skill_score: float = 0.0
    summarised: int = 0
    tokens: int = 0


class ContextBuilder:
    """Builds each turn's context.

    Args:
        history: the tenant's ``History``.
        budget_tokens: input tokens allowed (model window minus the reply's ``max_tokens``).
        history_limit: most recent turns considered at all.
        memory: returns the ``MemoryStore`` or None (called per turn; lazy).
        skills: an ``agent.skills.SkillLibrary`` or None.
        summarise: ``prompt -> text`` (the router's ``complete``) or None for an extractive summary.
    """

    def __init__(self, history: History, *, budget_tokens: int = 200_000, history_limit: int = 200,
                 memory: Callable[[], Any] = lambda: None, skills=None,
                 summarise: Callable[[str], str] | None = None, system_prompt: str = SYSTEM_PROMPT):
        self.history = history
        self.budget_tokens = budget_tokens
        self.history_limit = history_limit
        self.memory = memory
        self.skills = skills
        self.summarise = summarise
        self.system_prompt = system_prompt

    def build(self, chat_key: str, user_text: str, profile: str = "",
              content: str | list[dict] | None = None) -> AssembledContext:
        """Assemble the context for ``user_text`` in chat ``chat_key``; ``profile`` (a system
        prompt section, ``agent.preferences.profile_section``) follows the base prompt.

        ``content`` is the user message as the model gets it when it differs from the text
        memories and skills are matched on: image blocks, a document's text
        (``agent.media.PreparedMessage.content``); default ``user_text``.
        """
        memories = self._memories(user_text)
        skill, score = self.skills.match(user_text) if self.skills is not None else (None, 0.0)
        system = self._system(memories, skill, profile)
        user = {"role": "user", "content": content or user_text or "(empty message)"}
        budget = int(self.budget_tokens * SAFETY) - estimate_tokens(system) - content_tokens(user["content"])
        rows = self.history.recent_rows(chat_key, self.history_limit)
        kept, older = _fit(rows, budget)
        summarised = 0
        summary = self.history.summary(chat_key)
        if older:
            summary = self._summarise(chat_key, summary, older)
            summarised = len(older)
        if summary is not None and (not kept or summary[0] < kept[0][0]):
            system += f"\n\n## Earlier in this conversation (summary)\n{summary[1]}"
        messages = [{"role": role, "content": text} for _, role, text in kept] + [user]
        tokens = estimate_tokens(system) + sum(content_tokens(m["content"]) for m in messages)
        return AssembledContext(system, messages, memories, skill, score, summarised, tokens)

    def _memories(self, user_text: str) -> list:
        store = self.memory()
        if store is None or not user_text.strip():
            return []
        try:
            return list(store.search(user_text, k=MEMORY_K))
        except Exception:  # memory is an aid: a broken index must not break the turn
            log.exception("memory search failed; answering without memories")
            return []

    def _system(self, memories: list, skill, profile: str = "") -> str:
        system = self.system_prompt + profile
        if memories:
            lines = "\n".join(f"- {m.text}" for m in memories)
            system += f"\n\n## What you remember about the user\n{lines}"
        if skill is not None:
            system += ("\n\n## Skill to follow\nA skill you learned matches this request; use it as the "
                       f"execution template, adapting its steps to the details:\n\n{skill.document}")
        return system

    def _summarise(self, chat_key: str, summary, older: list[tuple[int, str, str]]) -> tuple[int, str]:
        upto = older[-1][0]
        if summary is not None and summary[0] >= upto:
            return summary
        fresh = [row for row in older if summary is None or row[0] > summary[0]]
        transcript = "\n".join(f"{role}: {text}" for _, role, text in fresh)
        if summary is not None:
            transcript = f"(summary so far) {summary[1]}\n{transcript}"
        text = None
        if self.summarise is not None:
            try:
                text = self.summarise(SUMMARY_PROMPT.format(text=transcript[-200_000:])).strip()
            except Exception as exc:  # noqa: BLE001 - any summariser failure falls back
                log.warning("history summary failed (%s); using an extractive one", exc)
        if not text:
            text = _extractive(summary, fresh)
        self.history.save_summary(chat_key, upto, text)
        return upto, text


def _fit(rows: list[tuple[int, str, str]], budget: int):
    """Split rows into (kept newest that fit ``budget``, older), kept starting with a user turn."""
    used, cut = 0, len(rows)
    for index in range(len(rows) - 1, -1, -1):
        cost = estimate_tokens(rows[index][2])
        if used + cost > budget:
            break
        used += cost
        cut = index
    while cut < len(rows) and rows[cut][1] != "user":
        cut += 1
    return rows[cut:], rows[:cut]


def _extractive(summary, rows: list[tuple[int, str, str]]) -> str:
    lines = [summary[1]] if summary is not None else []
    lines += [f"{role}: {text[:160]}" for _, role, text in rows[-20:]]
    return "\n".join(lines)[-4000:]
