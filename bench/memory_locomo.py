"""Memory retrieval benchmark on LoCoMo-format data (Maharana et al., ACL 2024).

Per conversation a fresh MemoryStore; every turn is added as "Speaker: text" with source = its
dia_id and created_at = its session's date; every question of categories 1-4 with evidence is
searched; recall@k = |evidence ∩ retrieved sources| / |evidence|, averaged over questions.
Evidence ids are taken with the pattern D<session>:<turn>, keeping only ids that exist.

    python bench/memory_locomo.py --data /work/shared/realdata/locomo/dev.json [--k 5]

Prints one JSON line: recall_at_k, k, questions, search_p50_ms, search_p99_ms, items, plus
per-category recall and ingest timing. ``--set NAME=VALUE`` overrides a RetrievalConfig field
(for ablations); ``--embed-cache FILE`` reuses vectors between runs (ablations only: it makes
ingest timing meaningless). ``--scale N`` instead measures search latency over N synthetic
memories (see bench/memory_scale.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.memory import MemoryStore, RetrievalConfig, default_embedder
from bench.memory_bench_support import CachingEmbedder, percentile

EVIDENCE_ID = re.compile(r"D\d+:\d+")
SESSION_KEY = re.compile(r"session_(\d+)")
SCORED_CATEGORIES = (1, 2, 3, 4)


def sessions(conversation: dict) -> list[tuple[str, list[dict]]]:
    """(date text, turns) per session, in session order."""
    numbers = sorted(int(m.group(1)) for key in conversation if (m := SESSION_KEY.fullmatch(key)))
    return [(conversation[f"session_{n}_date_time"], conversation[f"session_{n}"]) for n in numbers]


def questions(sample: dict, known_ids: set[str]) -> list[tuple[str, int, set[str]]]:
    """(question, category, evidence ids) for the scored categories with existing evidence."""
    out = []
    for qa in sample["qa"]:
        if qa.get("category") not in SCORED_CATEGORIES:
            continue
        evidence = {e for text in qa.get("evidence", []) for e in EVIDENCE_ID.findall(text) if e in known_ids}
        if evidence:
            out.append((qa["question"], qa["category"], evidence))
    return out


def run(data: Path, k: int, config: RetrievalConfig, embedder) -> dict:
    """Run the benchmark; returns the result dictionary printed as JSON."""
    samples = json.loads(data.read_text())
    recalls, latencies, by_category = [], [], defaultdict(list)
    items = ingest_seconds = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        for number, sample in enumerate(samples):
            store = MemoryStore(Path(workdir) / f"conversation{number}.db", embedder=embedder, config=config)
            known = set()
            started = time.perf_counter()
            for date, turns in sessions(sample["conversation"]):
                for turn in turns:
                    store.add(f"{turn['speaker']}: {turn['text']}", source=turn["dia_id"], created_at=date)
                    known.add(turn["dia_id"])
            store.flush()
            ingest_seconds += time.perf_counter() - started
            items += len(known)
            for question, category, evidence in questions(sample, known):
                started = time.perf_counter()
                hits = store.search(question, k=k)
                latencies.append((time.perf_counter() - started) * 1000)
                recall = len(evidence & {hit.source for hit in hits}) / len(evidence)
                recalls.append(recall)
                by_category[category].append(recall)
            store.close()
    return {
        "recall_at_k": round(sum(recalls) / len(recalls), 4),
        "k": k,
        "questions": len(recalls),
        "search_p50_ms": round(percentile(latencies, 50), 2),
        "search_p99_ms": round(percentile(latencies, 99), 2),
        "items": int(items),
        "recall_by_category": {str(c): round(sum(v) / len(v), 4) for c, v in sorted(by_category.items())},
        "ingest_seconds": round(ingest_seconds, 2),
        "ingest_ms_per_item": round(ingest_seconds * 1000 / max(items, 1), 2),
    }


def parse_overrides(pairs: list[str]) -> RetrievalConfig:
    """RetrievalConfig with NAME=VALUE overrides applied (values cast to the field's type)."""
    defaults = RetrievalConfig()
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not hasattr(defaults, name):
            raise SystemExit(f"unknown RetrievalConfig field: {name}")
        changes[name] = type(getattr(defaults, name))(value)
    return dataclasses.replace(defaults, **changes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="LoCoMo-format JSON file")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--embed-cache", type=Path, help="ablations only: .npz cache of vectors")
    parser.add_argument("--scale", type=int, help="measure search latency over N synthetic memories instead")
    args = parser.parse_args(argv)
    config = parse_overrides(args.set)
    if args.scale:
        from bench.memory_scale import run as run_scale

        print(json.dumps(run_scale(args.scale, args.k, config)))
        return
    if args.data is None:
        parser.error("--data is required unless --scale is given")
    embedder = default_embedder()
    if args.embed_cache:
        embedder = CachingEmbedder(embedder, args.embed_cache)
    result = run(args.data, args.k, config, embedder)
    if args.embed_cache:
        embedder.save()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
