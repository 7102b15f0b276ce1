"""Tenant image footprint (issue 22): the agent's venv and start time, before and after the
embedding model shipped exported to ONNX (no torch on the VM).

    python bench/image_footprint.py [--runs 3] [--before-ref 954be01]

* before: ``requirements/agent.txt`` and the code at ``--before-ref`` (the last commit whose
  agent lock pinned torch: sentence-transformers loaded the model and exported it to ONNX in
  memory at every start); after: this checkout, with the model exported once
  (``hermes image export-embedder``, the image build's step) as the image ships it.
* Each lock is installed with uv into its own venv (``--require-hashes``, bytecode compiled;
  torch's CPU wheel from ``TORCH_FIND_LINKS`` or /opt/wheels), then the project alone.
  ``<set>_venv_mib``: the venv's files (MiB, apparent size); ``after_embedder_mib``: the
  export the image ships next to it (before, the weights were inside the venv).
* ``<set>_embedder_ready_s``: a fresh process from interpreter start to the first embedding
  (import, model load, for ``before`` the in-memory ONNX export); median of ``--runs``.
* ``<set>_agent_ready_s``: ``python -m agent.main worker`` (hermes-huey.service's command, the
  process that owns the embedder and reports ``ready``) from spawn to its ready file, with a
  SQLite bus and the openai_compat backend (no model to load); median of ``--runs``.
* ``<set>_query_p50_ms``: one short text embedded, warm, median of 50.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.memory.onnx_export import export
from wire.embedder_export import default_dir

# The last commit whose requirements/agent.txt pinned torch (before issue 22's lighter image).
BEFORE_REF = "954be0133799154838cd1c7f1cefd2e2b978f4cb"
# What the project wheel is built from (as tests/image/conftest.py copies it).
SOURCE = ("pyproject.toml", "README.md", "agent", "agent_image", "cli", "control", "infra", "standins", "wire")
READY_TIMEOUT = 300.0  # seconds an agent may take to report ready before the run fails
EMBED_SCRIPT = """
import json, statistics, sys, time
started = time.perf_counter()
from agent.memory.embedders import LocalEmbedder
embedder = LocalEmbedder(*sys.argv[1:])
embedder.embed(["warm-up"])
ready = time.perf_counter() - started
times = []
for i in range(50):
    t = time.perf_counter()
    embedder.embed([f"what did I tell you about Anna's birthday {i}?"])
    times.append(time.perf_counter() - t)
print(json.dumps({"ready_s": ready, "query_p50_ms": statistics.median(times) * 1000,
                  "torch": "torch" in sys.modules}))
"""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def tree_mib(path: Path) -> float:
    """Apparent size of the files under ``path`` in MiB (hard links from uv's cache counted)."""
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())
    return round(total / 2**20, 1)


def source_tree(work: Path, ref: str | None) -> Path:
    """The project at ``ref`` (``git archive``), or this working tree when None, in ``work``."""
    target = work / ("src-" + (ref or "worktree")[:12])
    target.mkdir()
    if ref:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, *SOURCE], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    else:
        for name in SOURCE:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, target / name)
    return target


def install(work: Path, name: str, source: Path, lock: Path) -> Path:
    """A venv at ``work/venv-<name>`` holding exactly ``lock``, then the project from ``source``."""
    uv = Path(sys.executable).with_name("uv")
    venv = work / f"venv-{name}"
    links = os.environ.get("TORCH_FIND_LINKS") or "/opt/wheels"
    _run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)])
    _run([str(uv), "pip", "sync", "-q", "--python", str(venv / "bin/python"), "--require-hashes",
          "--compile-bytecode", "--find-links", links, str(lock)], timeout=1800)
    _run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin/python"), "--no-deps",
          "--compile-bytecode", str(source)], timeout=600)
    return venv


def embedder_run(venv: Path, work: Path, args: list[str]) -> dict:
    """One fresh process: load the embedder, embed once, then 50 warm queries."""
    out = _run([str(venv / "bin/python"), "-c", EMBED_SCRIPT, *args], cwd=work, timeout=READY_TIMEOUT,
               env={**os.environ, "HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def agent_ready_s(venv: Path, work: Path, run: int, extra_env: dict[str, str]) -> float:
    """Seconds from spawning ``agent.main worker`` to its ``agent.ready`` file; stops it after.

    Raises:
        RuntimeError: it exited or did not report ready within ``READY_TIMEOUT``.
    """
    data = work / f"data-{venv.name}-{run}"
    data.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work / "home"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HERMES_TENANT": "bench", "HERMES_DATA_DIR": str(data),
           "HERMES_LLM": "openai_compat", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", **extra_env}
    started = time.perf_counter()
    proc = subprocess.Popen([str(venv / "bin/python"), "-m", "agent.main", "worker"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not (data / "agent.ready").exists():
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - started > READY_TIMEOUT:
                raise RuntimeError(f"agent not ready after {READY_TIMEOUT:.0f} s")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before-ref", default=BEFORE_REF)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    exported = export(default_dir())  # the image build's step (a no-op once exported)
    work = Path(tempfile.mkdtemp(prefix="hermes-footprint-"))
    try:
        (work / "home").mkdir()
        before_lock = work / "agent-before.txt"
        before_lock.write_bytes(_run(["git", "-C", str(ROOT), "show", f"{args.before_ref}:requirements/agent.txt"]
                                     ).stdout.encode())
        sets = {"before": (install(work, "before", source_tree(work, args.before_ref), before_lock), [], {}),
                "after": (install(work, "after", source_tree(work, None), ROOT / "requirements/agent.txt"),
                          [str(exported)], {"HERMES_EMBEDDER_DIR": str(exported)})}
        result: dict[str, object] = {"before_ref": args.before_ref[:12], "runs": args.runs}
        for name, (venv, embedder_args, env) in sets.items():
            result[f"{name}_venv_mib"] = tree_mib(venv)
            runs = [embedder_run(venv, work, embedder_args) for _ in range(args.runs)]
            result[f"{name}_imports_torch"] = runs[0]["torch"]
            result[f"{name}_embedder_ready_s"] = round(statistics.median(r["ready_s"] for r in runs), 2)
            result[f"{name}_query_p50_ms"] = round(statistics.median(r["query_p50_ms"] for r in runs), 2)
            result[f"{name}_agent_ready_s"] = round(statistics.median(
                agent_ready_s(venv, work, run, env) for run in range(args.runs)), 2)
        result["after_embedder_mib"] = tree_mib(exported)
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
