"""Search latency of MemoryStore at scale (default 10,000 memories), query embedding included.

Memories are synthesised from templates and word lists written for this benchmark (no LoCoMo
text), in episodes of 20 like a chat history, spread over two years.

    python bench/memory_scale.py [--items 10000] [--queries 300] [--k 5]

Prints one JSON line: items, queries, k, search_p50_ms, search_p99_ms (wall clock of
MemoryStore.search, which embeds the query), embed_p50/p99_ms (query embedding alone),
retrieval_p50/p99_ms (search with the query vector already known: index work only),
ingest_seconds and the load average while measuring (latency on a shared 2-core VM is only
meaningful when the load is below ~1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.memory import MemoryStore, RetrievalConfig, default_embedder
from bench.memory_bench_support import CachingEmbedder, percentile

PEOPLE = ["Ava", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luis"]
RELATIONS = ["sister", "neighbour", "manager", "cousin", "dentist", "landlord", "coach", "colleague"]
PLACES = ["Lisbon", "the climbing gym", "Osaka", "the farmers' market", "Lake Bled", "the office",
          "a jazz bar", "the library", "Nairobi", "the allotment", "Montreal", "the bakery"]
ACTIVITIES = ["learning the cello", "training for a half marathon", "renovating the kitchen", "baking sourdough",
              "studying for the driving test", "volunteering at the shelter", "writing a fantasy novel",
              "planting tomatoes", "repairing an old motorbike", "practising Spanish"]
THINGS = ["a second-hand camera", "hiking boots", "a sourdough starter", "a vintage map", "headphones",
          "a bonsai tree", "concert tickets", "a tandem bicycle", "a pottery wheel", "a telescope"]
FEELINGS = ["thrilled", "a bit nervous", "exhausted but happy", "proud", "frustrated", "curious", "relieved"]
TEMPLATES = [
    "{p}: I've been {a} since spring and honestly I'm {f} about how it is going.",
    "{p}: My {r} recommended {t}, so I finally bought it last weekend.",
    "{p}: We spent the afternoon at {pl}; it was {f} and we stayed until closing time.",
    "{p}: Did I tell you my {r} moved to {pl}? I'm visiting in the autumn.",
    "{p}: I'm {f} because {a} takes so much time, but it clears my head after work.",
    "{p}: Next month I'm meeting my {r} at {pl} to talk about {a}.",
    "{p}: Guess what, I got {t} as a birthday present from my {r}!",
    "{p}: Honestly, {a} has taught me patience; my {r} keeps teasing me about it.",
]
QUESTIONS = [
    "What did {p}'s {r} recommend buying?", "Where did {p}'s {r} move to?", "How does {p} feel about {a}?",
    "When is {p} meeting their {r}?", "What present did {p} get for their birthday?", "Who teases {p} about {a}?",
]


def synthesise(count: int, seed: int = 7) -> list[tuple[str, datetime]]:
    """``count`` (text, created_at) pairs in episodes of 20 turns, one episode every ~3 days."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for n in range(count):
        when = start + timedelta(days=3 * (n // 20), minutes=n % 20)
        text = rng.choice(TEMPLATES).format(p=rng.choice(PEOPLE), r=rng.choice(RELATIONS), pl=rng.choice(PLACES),
                                            a=rng.choice(ACTIVITIES), t=rng.choice(THINGS), f=rng.choice(FEELINGS))
        out.append((text, when))
    return out


def queries(count: int, seed: int = 11) -> list[str]:
    """``count`` questions in the style of the memories."""
    rng = random.Random(seed)
    return [rng.choice(QUESTIONS).format(p=rng.choice(PEOPLE), r=rng.choice(RELATIONS), a=rng.choice(ACTIVITIES))
            for _ in range(count)]


def run(items: int, k: int, config: RetrievalConfig | None = None, query_count: int = 300,
        db_path: Path | None = None) -> dict:
    """Build a store of ``items`` memories (or reuse ``db_path`` when it already holds them) and
    time ``query_count`` searches; returns the result (ingest_seconds is None when reused)."""
    embedder = default_embedder()
    embedder.embed(["warm up"])
    with tempfile.TemporaryDirectory() as workdir:
        path = db_path or Path(workdir) / "memory.db"
        store = MemoryStore(path, embedder=embedder, config=config)
        ingest = None
        if store.count() < items:
            started = time.perf_counter()
            for text, when in synthesise(items - store.count()):
                store.add(text, source="synthetic", created_at=when)
            store.flush()
            ingest = round(time.perf_counter() - started, 1)
        asked = queries(query_count)
        store.search(asked[0], k=k)
        search_ms, embed_ms = [], []
        for question in asked:
            began = time.perf_counter()
            store.search(question, k=k)
            search_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            embedder.embed([question])
            embed_ms.append((time.perf_counter() - began) * 1000)
        store.close()
        cached = CachingEmbedder(embedder)
        cached.embed(asked)
        store = MemoryStore(path, embedder=cached, config=config)
        store.search(asked[0], k=k)
        retrieval_ms = []
        for question in asked:
            began = time.perf_counter()
            store.search(question, k=k)
            retrieval_ms.append((time.perf_counter() - began) * 1000)
        store.close()
    return {"items": items, "queries": len(asked), "k": k,
            "search_p50_ms": round(percentile(search_ms, 50), 2), "search_p99_ms": round(percentile(search_ms, 99), 2),
            "embed_p50_ms": round(percentile(embed_ms, 50), 2), "embed_p99_ms": round(percentile(embed_ms, 99), 2),
            "retrieval_p50_ms": round(percentile(retrieval_ms, 50), 2),
            "retrieval_p99_ms": round(percentile(retrieval_ms, 99), 2),
            "ingest_seconds": ingest, "load_average_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--db", type=Path, help="database to reuse if it holds the items, else build it there")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.items, args.k, query_count=args.queries, db_path=args.db)))


if __name__ == "__main__":
    main()
