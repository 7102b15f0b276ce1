"""Hybrid retrieval over the memory index: candidate generation and score fusion.

1. Candidates: the nearest neighbours of the query vector among own-text vectors and window
   vectors (exact, over the in-memory mirror of the sqlite-vec tables), the best BM25 matches
   (FTS5), the episode neighbours of those keyword matches, and the memories from a period the
   query names.
2. Vector score (weight ``weight_vector``): cosine to the own text plus ``weight_window_vector`` x cosine to the window,
   min-max scaled over the candidates.
3. Keyword score: BM25, plus ``keyword_neighbour_weight`` x the BM25 of the predecessor and the
   successor (in a dialogue the answer sits next to the turn that names the topic), scaled to [0, 1].
4. Fused = vector + ``weight_keyword`` x keyword; then + ``episode_weight`` x the best fused
   score in the memory's episode (hierarchical retrieval: a relevant conversation lifts its
   turns), + ``speaker_weight`` when the query names the memory's speaker, + the memory's
   shape prior (agent/memory/priors.py: length, question or answer, time for "when" queries),
   + ``date_weight`` when the query names a period the memory was created in (agent/memory/daterefs.py).
5. Multiplied by the recency weight (see ranking.recency_weight).
"""

from __future__ import annotations

from datetime import UTC, tzinfo

import apsw
import numpy as np

from agent.memory.daterefs import named_periods
from agent.memory.priors import asks_when, prior
from agent.memory.ranking import (
    SECONDS_PER_DAY,
    RetrievalConfig,
    keyword_query,
    mentions,
    min_max,
    recency_weight,
)
from agent.memory.vectors import VectorMirror


def _in(ids) -> str:
    return ",".join(str(int(i)) for i in ids)


def _top(similarities: np.ndarray, ids: np.ndarray, limit: int) -> set[int]:
    if len(ids) <= limit:
        return {int(i) for i in ids}
    return {int(i) for i in ids[np.argpartition(-similarities, limit)[:limit]]}


def _keyword_hits(db: apsw.Connection, query: str, limit: int) -> dict[int, float]:
    match = keyword_query(query)
    if match is None:
        return {}
    rows = db.execute("SELECT rowid, -bm25(memory_fts) FROM memory_fts WHERE memory_fts MATCH ? "
                      "ORDER BY bm25(memory_fts) LIMIT ?", (match, limit))
    return {row[0]: row[1] for row in rows}


def _dated(db: apsw.Connection, query: str, config: RetrievalConfig, now: float, zone: tzinfo) -> set[int]:
    """Ids of memories created in a period the query names, or up to ``date_report_lag_days``
    after it (an event is often told a little later: "last week I ..."); at most ``dated_limit``."""
    if config.date_weight <= 0:
        return set()
    periods = named_periods(query, now, zone)
    if not periods:
        return set()
    lag = config.date_report_lag_days * SECONDS_PER_DAY
    where = " OR ".join("(created_at >= ? AND created_at < ?)" for _ in periods)
    bounds = [bound for start, end in periods for bound in (start, end + lag)]
    rows = db.execute(f"SELECT id FROM memories WHERE {where} ORDER BY created_at LIMIT ?",
                      (*bounds, config.dated_limit))
    return {row[0] for row in rows}


def _candidates(db: apsw.Connection, vectors: VectorMirror, similarities: tuple[np.ndarray, np.ndarray],
                keyword: dict[int, float], dated: set[int], config: RetrievalConfig) -> set[int]:
    """Ids worth scoring: vector and keyword hits, the episode neighbours of keyword hits, and
    the memories from a period the query names."""
    candidates = set(keyword) | dated
    if config.weight_vector > 0:
        for similarity in similarities:
            candidates |= _top(similarity, vectors.ids, config.candidates)
    if keyword and config.keyword_neighbour_weight > 0:
        hits = _in(keyword)
        rows = db.execute(f"SELECT prev_id FROM memories WHERE id IN ({hits}) AND prev_id IS NOT NULL "
                          f"UNION SELECT id FROM memories WHERE prev_id IN ({hits})")
        candidates |= {row[0] for row in rows}
    return candidates


def score_candidates(db: apsw.Connection, vectors: VectorMirror, query: str, vector: np.ndarray,
                     config: RetrievalConfig, now: float, zone: tzinfo = UTC) -> dict[int, float]:
    """Fused, decayed scores {memory id: score} of the candidates for ``query`` (its unit ``vector``).

    ``vectors`` mirrors the flushed vec0 tables; ``now`` is Unix seconds for the recency weight
    and for relative dates ("yesterday"); ``zone`` is the user's time zone for named dates.
    """
    own_similarity, window_similarity = vectors.similarities(vector)
    keyword = _keyword_hits(db, query, config.candidates)
    dated = _dated(db, query, config, now, zone)
    candidates = _candidates(db, vectors, (own_similarity, window_similarity), keyword, dated, config)
    if not candidates:
        return {}
    meta = {row[0]: row[1:] for row in db.execute(
        "SELECT m.id, m.prev_id, m.episode_id, m.speaker, m.last_accessed_at, m.body_chars, m.is_question, "
        "p.is_question, m.mentions_time "
        f"FROM memories m LEFT JOIN memories p ON p.id = m.prev_id WHERE m.id IN ({_in(candidates)})")}
    successor = {row[1]: row[0] for row in db.execute(
        f"SELECT id, prev_id FROM memories WHERE prev_id IN ({_in(meta)})")}
    dense = {}
    for i in meta:
        row = vectors.position(i)
        if row is not None:
            dense[i] = float(own_similarity[row] + config.weight_window_vector * window_similarity[row])
    dense = min_max(dense)
    share = config.keyword_neighbour_weight
    lexical = min_max({i: keyword.get(i, 0.0) + share * (keyword.get(meta[i][0], 0.0)
                                                          + (keyword.get(successor[i], 0.0) if i in successor else 0.0))
                       for i in meta}, floor=0.0, min_span=config.keyword_scale_floor)
    fused = {i: config.weight_vector * dense.get(i, 0.0) + config.weight_keyword * lexical[i] for i in meta}
    best_in_episode: dict[int, float] = {}
    for i, score in fused.items():
        episode = meta[i][1]
        best_in_episode[episode] = max(best_in_episode.get(episode, 0.0), score)
    named = {speaker for speaker in {m[2] for m in meta.values() if m[2]} if mentions(query, speaker)}
    when_query = asks_when(query)
    return {
        i: max(0.0, fused[i] + config.episode_weight * best_in_episode[meta[i][1]]
               + (config.speaker_weight if meta[i][2] in named else 0.0)
               + (config.date_weight if i in dated else 0.0)
               + prior(meta[i][4], meta[i][5], meta[i][6], meta[i][7], when_query, config))
        * recency_weight(meta[i][3], now, config)
        for i in meta
    }
