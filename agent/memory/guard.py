"""Detection of text that reads like an instruction to the agent (prompt injection).

Such text must never become a memory: memories are put into the model's context on later
turns, so a stored "ignore previous instructions" would act as a persistent injection
(OWASP Top 10 for LLM Applications, LLM01 "Prompt Injection"; Greshake et al. 2023,
"Not what you've signed up for: indirect prompt injection").
"""

from __future__ import annotations

import re

# Each rule: (reason shown to the user, pattern). Patterns target phrasing addressed to the
# assistant, not facts about the user ("I must now take my pills" stays allowed).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        ("overrides earlier instructions",
         (r"\b(ignore|disregard|forget|override|bypass)\s+((all|any|of|the|your|these|those|previous|prior|"
          r"above|earlier|preceding|given|system|safety|original)\s+){1,4}(instructions?|prompts?|rules|"
          r"directions|guidelines|messages|constraints)\b")),
        ("mentions the system prompt", r"\bsystem[\s_-]*(prompt|message|instructions?)\b"),
        ("addresses the assistant with an order",
         (r"\b(you|assistant|the ai|the model|the bot)\s+(must|shall|should|will|are to|have to|need to)\s+"
          r"(now|always|from now on|henceforth)\b")),
        ("addresses the assistant with an order", r"\b(you|assistant)\s+must\s+now\b"),
        ("redefines the assistant",
         (r"\b(from now on|henceforth|starting now)\b[,\s]*(you|the assistant|the ai)\b"
          r"\s+(are|will|must|should|shall)\b")),
        ("redefines the assistant", r"\byou are (now|no longer)\b"),
        ("redefines the assistant",
         (r"\b(pretend|act) (to be|as if you|as an?|like an?)\b.{0,40}"
          r"\b(ai|assistant|model|bot|unrestricted|jailbroken)\b")),
        ("new instructions", r"\bnew (instructions?|rules|directives?)\s*[:\-]"),
        ("asks to reveal hidden instructions",
         (r"\b(reveal|print|show|output|repeat|leak|dump)\b.{0,30}"
          r"\b(instructions|prompt|hidden|secret|api key|credentials)\b")),
        ("jailbreak vocabulary", r"\b(jailbreak|jailbroken|developer mode|DAN mode|do anything now)\b"),
        ("chat-template markup",
         (r"(<\|im_start\|>|<\|im_end\|>|<\|system\|>|\[/?INST\]|<</?SYS>>"
          r"|^\s*#{2,}\s*(system|instruction)s?\b|^\s*(system|assistant)\s*:)")),
        ("tells the assistant to hide things from the user",
         r"\b(do not|don't|never)\s+(tell|inform|mention to|reveal to)\s+the user\b"),
    )
)


def injection_reason(text: str) -> str | None:
    """Return why ``text`` looks like an instruction to the agent, or None when it looks safe."""
    for reason, pattern in _RULES:
        if pattern.search(text):
            return reason
    return None


def looks_like_instruction(text: str) -> bool:
    """True when ``text`` reads like an instruction to the agent and must not be stored."""
    return injection_reason(text) is not None
