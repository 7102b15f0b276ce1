"""Pure ranking pieces of hybrid memory retrieval: keyword query, rank fusion, recency decay."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0

# Function words that carry no topic (a subset of Lucene's EnglishAnalyzer stop set plus
# question words); dropped from keyword queries so OR-matching does not reward them.
STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with what when where which who whom whose why how do does did
    done has have had i me my we our you your he him his she her its them were been being am can
    could would should shall may might must from about than so too very just also any some all
    ever much many more most other into over after before up down out off again further once""".split()
)

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class RetrievalConfig:
    """Knobs of hybrid retrieval. Defaults are the values reported in bench/memory_locomo.py.

    candidates: how many hits each retriever contributes before fusion.
    rrf_k: the constant of reciprocal rank fusion (Cormack et al., SIGIR 2009, use 60).
    weight_*: per-retriever weights in the fusion (own-text vector, window vector, keywords).
    context_column_weight: BM25 weight of neighbouring turns relative to the memory's own text.
    window: neighbouring memories on each side folded into a memory's context.
    episode_gap_seconds: neighbours further apart in created_at than this are not context.
    decay_after_days / decay_half_life_days / decay_floor: memories not accessed for longer than
    decay_after_days (90, per the product requirement) lose weight with this half-life, down to
    the floor.
    """

    candidates: int = 50
    rrf_k: int = 60
    weight_vector: float = 1.0
    weight_context_vector: float = 1.0
    weight_keyword: float = 1.0
    context_column_weight: float = 0.3
    window: int = 1
    episode_gap_seconds: float = 6 * 3600.0
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


def reciprocal_rank_fusion(rankings: list[tuple[float, list[int]]], k: int) -> dict[int, float]:
    """Fuse ranked id lists: score(id) = sum(weight / (k + rank)), rank starting at 1.

    ``rankings`` holds (weight, ids best first). Returns {id: fused score}.
    """
    scores: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, memory_id in enumerate(ids, start=1):
            scores[memory_id] = scores.get(memory_id, 0.0) + weight / (k + rank)
    return scores


def recency_weight(last_accessed_at: float, now: float, config: RetrievalConfig) -> float:
    """Multiplier in [decay_floor, 1] for a memory last accessed at ``last_accessed_at`` (Unix s).

    1.0 within decay_after_days; afterwards halves every decay_half_life_days, never below the floor.
    """
    idle_days = (now - last_accessed_at) / SECONDS_PER_DAY - config.decay_after_days
    if idle_days <= 0:
        return 1.0
    return max(config.decay_floor, math.pow(0.5, idle_days / config.decay_half_life_days))
