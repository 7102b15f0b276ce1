"""Per-turn overhead of context assembly (``agent.context.ContextBuilder.build``), in milliseconds.

Builds a tenant on a temp dir with ``--turns`` history messages (~``--chars`` characters each),
``--memories`` memories in the real ``agent.memory.MemoryStore`` (bundled all-MiniLM-L6-v2) and
``--skills`` skills, then times ``build`` for ``--runs`` requests in three set-ups:

* ``history_only``: no memory, no skills (SQLite history + token budgeting);
* ``skills_only``: + skill matching (one query embedding on CPU, a dot product per skill);
* ``full``: + top-5 memory search (``MemoryStore.search``; shares the query embedding);
* ``summarised``: a small budget so older history is folded into the cached summary.

Prints one JSON line: ``{"history_only_p50_ms", "history_only_p99_ms", "skills_only_p50_ms",
"skills_only_p99_ms", "full_p50_ms",
"full_p99_ms", "summarised_p50_ms", "summarised_p99_ms", "turns", "memories", "skills", "runs"}``.
Usage: ``python bench/context_assembly.py [--turns 200] [--memories 1000] [--skills 20] [--runs 50]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.context import ContextBuilder
from agent.history import History
from agent.skills import Skill, SkillLibrary

KEY = "telegram:bench"
TOPICS = ["flights to Lisbon", "the quarterly report", "my sister's birthday", "a pasta recipe",
          "running shoes", "the tax deadline", "a python bug", "the dentist appointment"]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return round(statistics.median(ordered), 3), round(p99, 3)


def _time(builder: ContextBuilder, runs: int, label: str) -> tuple[float, float]:
    samples = []
    for n in range(runs):
        started = time.perf_counter()
        # Distinct texts per set-up, so no set-up profits from another's query-embedding cache.
        builder.build(KEY, f"Can you help me with {TOPICS[n % len(TOPICS)]} again? ({label} {n})")
        samples.append((time.perf_counter() - started) * 1000)
    return _percentiles(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--chars", type=int, default=600)
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    from agent.memory import MemoryStore, default_embedder
    from agent.runtime import QueryCachingEmbedder

    embedder = QueryCachingEmbedder(default_embedder())  # as the agent runtime wires it
    embedder.embed(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        history = History(root / "history.db")
        for n in range(args.turns // 2):
            topic = TOPICS[n % len(TOPICS)]
            history.record_exchange(KEY, f"e{n}", f"About {topic}: " + "x" * args.chars,
                                    f"Sure, {topic}: " + "y" * args.chars)
        store = MemoryStore(root / "memory.db", embedder=embedder)
        for n in range(args.memories):
            store.add(f"The user mentioned {TOPICS[n % len(TOPICS)]} (note {n}).", source=f"m{n}")
        library = SkillLibrary(root / "skills", embedder)
        for n in range(args.skills):
            skill = Skill(f"skill-{n}", f"Handle {TOPICS[n % len(TOPICS)]} task variant {n}", "1.0.0",
                          "## Steps\n1. Call `current_time`")
            (root / "skills" / skill.name).mkdir(parents=True)
            (root / "skills" / skill.name / "SKILL.md").write_text(skill.document)
        library.list()

        plain = ContextBuilder(history, budget_tokens=200_000)
        skills_only = ContextBuilder(history, budget_tokens=200_000, skills=library)
        full = ContextBuilder(history, budget_tokens=200_000, memory=lambda: store, skills=library)
        small = ContextBuilder(history, budget_tokens=8_000, memory=lambda: store, skills=library,
                               summarise=lambda prompt: "The user discussed many topics.")
        small.build(KEY, "prime the summary cache")
        result = {}
        setups = (("history_only", plain), ("skills_only", skills_only), ("full", full),
                  ("summarised", small))
        for name, builder in setups:
            p50, p99 = _time(builder, args.runs, name)
            result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = p50, p99
        result.update(turns=args.turns, memories=args.memories, skills=args.skills, runs=args.runs)
        store.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
