"""Query-independent and question-type priors added to a memory's retrieval score.

A memory's fused relevance says how close it is to the query; these priors say how likely a
memory of that shape is to hold an answer at all (document priors, as in Kraaij, Westerveld and
Hiemstra, "The Importance of Prior Probabilities for Entry Page Search", SIGIR 2002):

- length: longer memories state more; the prior grows with ln(characters), speaker label excluded.
- question: a memory that ends in "?" asks rather than tells.
- answer: a memory whose episode predecessor ends in "?" is the reply to a question.
- time: when the query asks "when ..." or "how long ...", memories that mention a time
  ("last week", "yesterday", "in 2022", "on Monday") are likelier to date the event.

The weights (RetrievalConfig.length_weight, question_weight, answer_weight, time_weight) were
fitted on the LoCoMo dev split with leave-one-conversation-out selection (bench/memory_locomo.py).
"""

from __future__ import annotations

import math
import re

from agent.memory.ranking import SPEAKER, RetrievalConfig

# English time expressions that date an event relative to the moment of speaking or on a calendar.
TIME_EXPRESSION = re.compile(
    r"\b(yesterday|today|tonight|tomorrow|last|ago|next|weekend|week|month|year|years|since|recently|"
    r"(?:19|20)\d\d|january|february|march|april|may|june|july|august|september|october|november|"
    r"december|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)
ASKS_WHEN = re.compile(r"\s*(when|how long)\b", re.IGNORECASE)


def asks_when(query: str) -> bool:
    """True for queries asking for a time or a duration ("When did ...", "How long ...")."""
    return ASKS_WHEN.match(query) is not None


def is_question(text: str | None) -> bool:
    """True when ``text`` ends with a question mark (trailing spaces ignored)."""
    return bool(text) and text.rstrip().endswith("?")


def body(text: str) -> str:
    """``text`` without a leading "Name: " speaker label."""
    match = SPEAKER.match(text)
    return text[match.end():] if match else text


def prior(text: str, previous: str | None, when_query: bool, config: RetrievalConfig) -> float:
    """Score offset of a memory with ``text`` whose episode predecessor is ``previous`` (or None).

    ``when_query`` is asks_when(query). Returns a float on the scale of the fused score (about 0-3).
    """
    score = config.length_weight * math.log(len(body(text)) + 1.0)
    if is_question(text):
        score += config.question_weight
    if is_question(previous):
        score += config.answer_weight
    if when_query and TIME_EXPRESSION.search(text):
        score += config.time_weight
    return score
