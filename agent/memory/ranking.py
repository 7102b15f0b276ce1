"""Pure ranking pieces of hybrid memory retrieval: configuration, keyword query, score fusion, decay."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0

# Function words that carry no topic (a subset of Lucene's EnglishAnalyzer stop set plus
# question words); dropped from keyword queries so OR-matching does not reward them.
STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
     "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
     "they", "this", "to", "was", "will", "with", "what", "when", "where", "which", "who", "whom",
     "whose", "why", "how", "do", "does", "did", "done", "has", "have", "had", "i", "me", "my",
     "we", "our", "you", "your", "he", "him", "his", "she", "her", "its", "them", "were", "been",
     "being", "am", "can", "could", "would", "should", "shall", "may", "might", "must", "from",
     "about", "than", "so", "too", "very", "just", "also", "any", "some", "all", "ever", "much",
     "many", "more", "most", "other", "into", "over", "after", "before", "up", "down", "out", "off",
     "again", "further", "once"]
)

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class RetrievalConfig:
    """Knobs of hybrid retrieval; defaults are the values reported by bench/memory_locomo.py.

    The fusion weights were picked by a 216-point grid on the LoCoMo dev split (five
    conversations); leave-one-conversation-out selection gives recall@5 0.680 against 0.693
    in-sample, so they are not fitted to individual conversations. The four prior weights
    (length, question, answer, time) were then fitted the same way: recall@5 0.725 in-sample,
    0.725 held out (every fold picks these values; ``bench/memory_locomo.py --grid``).

    candidates: hits taken from each retriever (vector KNN on own text, on the window, BM25).
    weight_vector: weight of the (scaled) vector score; 0 gives keyword-only retrieval.
    weight_window_vector: weight of the similarity to a memory's window (its episode
        predecessor + itself) added to the similarity to its own text.
    weight_keyword: weight of the normalised BM25 score against the normalised vector score.
    keyword_scale_floor: BM25 scores are divided by the best one, but by no less than this, so
        a query whose terms occur in most memories (FTS5 then gives idf ~1e-6, e.g. "user" in
        "The user ...") does not get full keyword weight.
    keyword_neighbour_weight: share of the predecessor's and successor's BM25 score a memory
        inherits (a reply answers the turn before it; a question is answered by the next one).
    episode_weight: share of the best score in the memory's episode added to its own.
    speaker_weight: bonus when the query names the memory's speaker ("Name: text" memories).
    length_weight / question_weight / answer_weight / time_weight: shape priors added to the
        score (agent/memory/priors.py): x ln(characters); a memory that is a question; a
        memory that answers one; a memory naming a time when the query asks "when".
    date_weight / date_report_lag_days / dated_limit: when the query names a date ("on 7 July,
        2023", "in March 2024", "yesterday": agent/memory/daterefs.py), memories created in that
        period or up to date_report_lag_days after it (events are often told later: "last week
        I ...") get date_weight added and join the candidates (at most dated_limit of them).
        Chosen on LoCoMo dev the same way: 0.725 -> 0.743, 0.741 held out (every fold picks
        weight 1.0 or 1.5, lag 3 or 7 days).
    episode_gap_seconds: consecutive memories closer than this in created_at form one episode
        (30 minutes, the usual web-analytics session timeout).
    decay_after_days / decay_half_life_days / decay_floor: memories not accessed for longer
        than decay_after_days (90, the product requirement) lose weight with this half-life,
        down to the floor.
    """

    candidates: int = 100
    weight_vector: float = 1.0
    weight_window_vector: float = 1.0
    weight_keyword: float = 1.0
    keyword_scale_floor: float = 1.0
    keyword_neighbour_weight: float = 0.3
    episode_weight: float = 0.6
    speaker_weight: float = 0.6
    length_weight: float = 0.2
    question_weight: float = -0.4
    answer_weight: float = 0.1
    time_weight: float = 0.4
    date_weight: float = 1.0
    date_report_lag_days: float = 7.0
    dated_limit: int = 500
    episode_gap_seconds: float = 30 * 60.0
    decay_after_days: float = 90.0
    decay_half_life_days: float = 90.0
    decay_floor: float = 0.25


def keyword_query(text: str) -> str | None:
    """An FTS5 MATCH expression OR-ing the quoted content words of ``text`` (None if it has none)."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
    if not words:
        words = _WORD.findall(text.lower())
    unique = list(dict.fromkeys(words))
    if not unique:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in unique)


def recency_weight(last_accessed_at: float, now: float, config: RetrievalConfig) -> float:
    """Multiplier in [decay_floor, 1] for a memory last accessed at ``last_accessed_at`` (Unix s).

    1.0 within decay_after_days; afterwards halves every decay_half_life_days, never below the floor.
    """
    idle_days = (now - last_accessed_at) / SECONDS_PER_DAY - config.decay_after_days
    if idle_days <= 0:
        return 1.0
    return max(config.decay_floor, math.pow(0.5, idle_days / config.decay_half_life_days))


def min_max(scores: dict[int, float], floor: float | None = None, min_span: float = 0.0) -> dict[int, float]:
    """Scale scores to [0, 1]: the best becomes 1 (unless the spread is below ``min_span``, which
    then counts as 1), ``floor`` (default: the lowest) becomes 0."""
    if not scores:
        return {}
    low = min(scores.values()) if floor is None else floor
    span = max(max(scores.values()) - low, min_span)
    if span <= 0:
        return dict.fromkeys(scores, 0.0)
    return {key: max(0.0, (value - low) / span) for key, value in scores.items()}


SPEAKER = re.compile(r"^([A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,3}):\s")


def speaker_of(text: str) -> str | None:
    """The speaker of a "Name: text" memory (up to four capitalised words before a colon), or None."""
    match = SPEAKER.match(text)
    return match.group(1) if match else None


def mentions(query: str, name: str) -> bool:
    """True when ``name`` occurs in ``query`` as whole words, capitalised as written."""
    return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", query) is not None
