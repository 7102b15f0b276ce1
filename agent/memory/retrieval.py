"""Hybrid retrieval over the memory index: candidate generation and score fusion.

1. Candidates: the nearest neighbours of the query vector among own-text vectors and window
   vectors (sqlite-vec KNN), the best BM25 matches (FTS5), and the episode neighbours of those
   keyword matches.
2. Vector score: cosine to the own text plus ``weight_window_vector`` x cosine to the window,
   min-max scaled over the candidates.
3. Keyword score: BM25, plus ``keyword_neighbour_weight`` x the BM25 of the predecessor and the
   successor (in a dialogue the answer sits next to the turn that names the topic), scaled to [0, 1].
4. Fused = vector + ``weight_keyword`` x keyword; then + ``episode_weight`` x the best fused
   score in the memory's episode (hierarchical retrieval: a relevant conversation lifts its
   turns), + ``speaker_weight`` when the query names the memory's speaker.
5. Multiplied by the recency weight (see ranking.recency_weight).
"""

from __future__ import annotations

import apsw
import numpy as np

from agent.memory.ranking import RetrievalConfig, keyword_query, mentions, min_max, recency_weight


def _in(ids) -> str:
    return ",".join(str(int(i)) for i in ids)


def _knn(db: apsw.Connection, table: str, blob: bytes, limit: int) -> list[int]:
    rows = db.execute(f"SELECT rowid FROM {table} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                      (blob, limit))
    return [row[0] for row in rows]


def _keyword_hits(db: apsw.Connection, query: str, limit: int) -> dict[int, float]:
    match = keyword_query(query)
    if match is None:
        return {}
    rows = db.execute("SELECT rowid, -bm25(memory_fts) FROM memory_fts WHERE memory_fts MATCH ? "
                      "ORDER BY bm25(memory_fts) LIMIT ?", (match, limit))
    return {row[0]: row[1] for row in rows}


def _cosines(db: apsw.Connection, table: str, blob: bytes, ids: set[int]) -> dict[int, float]:
    rows = db.execute(f"SELECT rowid, vec_distance_cosine(embedding, ?) FROM {table} "
                      f"WHERE rowid IN ({_in(ids)})", (blob,))
    return {row[0]: 1.0 - row[1] for row in rows}


def score_candidates(db: apsw.Connection, query: str, vector: np.ndarray, config: RetrievalConfig,
                     now: float) -> dict[int, float]:
    """Fused, decayed scores {memory id: score} of the candidates for ``query`` (its ``vector``).

    ``now`` is Unix seconds for the recency weight. Requires the vector tables to exist.
    """
    blob = vector.astype(np.float32).tobytes()
    keyword = _keyword_hits(db, query, config.candidates)
    candidates = set(_knn(db, "memory_vectors", blob, config.candidates))
    candidates |= set(_knn(db, "memory_window_vectors", blob, config.candidates)) | set(keyword)
    if keyword and config.keyword_neighbour_weight > 0:
        hits = _in(keyword)
        rows = db.execute(f"SELECT prev_id FROM memories WHERE id IN ({hits}) AND prev_id IS NOT NULL "
                          f"UNION SELECT id FROM memories WHERE prev_id IN ({hits})")
        candidates |= {row[0] for row in rows}
    if not candidates:
        return {}
    meta = {row[0]: row[1:] for row in db.execute(
        f"SELECT id, prev_id, episode_id, speaker, last_accessed_at FROM memories WHERE id IN ({_in(candidates)})")}
    successor = {row[1]: row[0] for row in db.execute(
        f"SELECT id, prev_id FROM memories WHERE prev_id IN ({_in(meta)})")}
    own = _cosines(db, "memory_vectors", blob, set(meta))
    window = _cosines(db, "memory_window_vectors", blob, set(meta))
    dense = min_max({i: own.get(i, 0.0) + config.weight_window_vector * window.get(i, 0.0) for i in meta})
    share = config.keyword_neighbour_weight
    lexical = min_max({i: keyword.get(i, 0.0) + share * (keyword.get(meta[i][0], 0.0)
                                                          + keyword.get(successor.get(i), 0.0))
                       for i in meta}, floor=0.0)
    fused = {i: dense[i] + config.weight_keyword * lexical[i] for i in meta}
    best_in_episode: dict[int, float] = {}
    for i, score in fused.items():
        episode = meta[i][1]
        best_in_episode[episode] = max(best_in_episode.get(episode, 0.0), score)
    named = {speaker for speaker in {m[2] for m in meta.values() if m[2]} if mentions(query, speaker)}
    return {
        i: (fused[i] + config.episode_weight * best_in_episode[meta[i][1]]
            + (config.speaker_weight if meta[i][2] in named else 0.0))
        * recency_weight(meta[i][3], now, config)
        for i in meta
    }
