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
fitted on the LoCoMo dev split with leave-one-conversation-out selection (bench/memory_locomo.py
--grid): recall@5 0.693 -> 0.725, and 0.715 against 0.685 held out when all fusion weights and
priors are re-chosen on four conversations and scored on the fifth.
"""

from __future__ import annotations

import math
import re

from agent.memory.ranking import SPEAKER, RetrievalConfig

# English time expressions that date an event relative to the moment of speaking or on a calendar;
# month names only capitalised, so the modal "may" does not count.
TIME_EXPRESSION = re.compile(
    r"\b(?i:yesterday|today|tonight|tomorrow|last|ago|next|weekend|week|month|year|years|since|recently|"
    r"(?:19|20)\d\d|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
    r"|\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b"
)
ASKS_WHEN = re.compile(r"\s*(when|how long)\b", re.IGNORECASE)


def asks_when(query: str) -> bool:
    """True for queries asking for a time or a duration ("When did ...", "How long ...")."""
    return ASKS_WHEN.match(query) is not None


def is_question(text: str) -> bool:
    """True when ``text`` ends with a question mark (trailing spaces ignored)."""
    return text.rstrip().endswith("?")


def body(text: str) -> str:
    """``text`` without a leading "Name: " speaker label."""
    match = SPEAKER.match(text)
    return text[match.end():] if match else text


def shape(text: str) -> tuple[int, int, int]:
    """(characters without the speaker label, 1 if a question else 0, 1 if it names a time else 0);
    stored with each memory when it is written so a search only reads three integers."""
    return len(body(text)), int(is_question(text)), int(TIME_EXPRESSION.search(text) is not None)


def prior(body_chars: int, question: bool, answers_question: bool, mentions_time: bool,
          when_query: bool, config: RetrievalConfig) -> float:
    """Score offset of a memory of ``body_chars`` characters (speaker label excluded), given
    whether it is a question, whether its episode predecessor is one, and whether it names a time.

    ``when_query`` is asks_when(query). Returns a float on the scale of the fused score (about 0-3).
    """
    score = config.length_weight * math.log(body_chars + 1.0)
    if question:
        score += config.question_weight
    if answers_question:
        score += config.answer_weight
    if when_query and mentions_time:
        score += config.time_weight
    return score
