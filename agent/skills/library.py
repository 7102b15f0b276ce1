"""The tenant's skill library: ``<data_dir>/skills/<name>/SKILL.md`` files plus an embedding index.

* ``learn``: after a task of more than ``min_steps`` tool steps with no close skill, write a
  new skill whose description is the request and whose steps are the tool calls made.
* ``match``: cosine similarity (normalised embeddings, dot product) between a request and each
  skill's description; at or above ``threshold`` (0.85, issue 3) the skill is the template.
* ``refine``: after a successful run with a skill, bump its version and append a change note
  (and adopt the new step sequence when it differs).
The index is rebuilt from the files when the directory changes, so hand-edited or deleted
skills are picked up.
"""

from __future__ import annotations

import builtins
import logging
import shutil
import threading
from pathlib import Path

import numpy as np

from agent.skills.document import Skill, SkillFormatError, bump, parse, slug, steps_markdown, today

log = logging.getLogger(__name__)


class SkillLibrary:
    """Skills in ``directory``.

    Args:
        directory: the tenant's skills directory (created if missing).
        embedder: object with ``embed(list[str]) -> np.ndarray`` of L2-normalised rows.
        threshold: similarity at which a skill matches (cosine, 0..1).
        min_steps: a task needs more tool steps than this to be learned.
    """

    def __init__(self, directory: str | Path, embedder, *, threshold: float = 0.85, min_steps: int = 3):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.threshold = threshold
        self.min_steps = min_steps
        self._lock = threading.Lock()
        self._index_key: tuple | None = None
        self._skills: list[Skill] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)

    def list(self) -> list[Skill]:
        """Return every valid skill, sorted by name."""
        return list(self._index()[0])

    def get(self, name: str) -> Skill | None:
        """Return skill ``name`` or None."""
        return next((s for s in self.list() if s.name == name), None)

    def delete(self, name: str) -> bool:
        """Delete skill ``name``; return whether it existed."""
        skill = self.get(name)
        if skill is None or skill.path is None:
            return False
        shutil.rmtree(skill.path.parent)
        return True

    def match(self, text: str) -> tuple[Skill | None, float]:
        """Return ``(skill, similarity)`` of the closest skill when ≥ threshold, else ``(None, best)``."""
        skills, vectors = self._index()
        if not skills or not text.strip():
            return None, 0.0
        query = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        scores = vectors @ query
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (skills[best], score) if score >= self.threshold else (None, score)

    def learn(self, request: str, steps) -> Skill | None:
        """Write a new skill for ``request`` solved by ``steps``; None when not warranted.

        Not warranted: ``min_steps`` or fewer tool steps, or a close skill already exists.
        """
        if len(steps) <= self.min_steps:
            return None
        close, score = self.match(request)
        if close is not None:
            log.info("not learning a skill: %s is close (%.2f)", close.name, score)
            return None
        name = self._free_name(slug(request))
        body = (f"# {name}\n\nUse for requests like: \"{request.strip()}\"\n\n## Steps\n{steps_markdown(steps)}\n"
                "\nAdapt the inputs to the new request; answer the user with the results.\n\n"
                f"## Changes\n- 1.0.0 ({today()}): learned from a {len(steps)}-step task.")
        skill = Skill(name, _description(request), "1.0.0", body)
        return self._write(skill)

    def refine(self, skill: Skill, request: str, steps) -> Skill:
        """Record a successful run of ``skill`` for ``request``; return the new version."""
        version = bump(skill.version)
        body = skill.body
        if steps and steps_markdown(steps) not in body:
            head, _, rest = body.partition("## Steps\n")
            _, sep, tail = rest.partition("\n\n")
            body = f"{head}## Steps\n{steps_markdown(steps)}{sep}{tail}" if head else body
            change = f"used for \"{request.strip()[:80]}\"; steps updated to the {len(steps)} calls that worked"
        else:
            change = f"used successfully for \"{request.strip()[:80]}\""
        body = f"{body.rstrip()}\n- {version} ({today()}): {change}."
        return self._write(Skill(skill.name, skill.description, version, body))

    def _write(self, skill: Skill) -> Skill:
        folder = self.directory / skill.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "SKILL.md"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(skill.document, encoding="utf-8")
        tmp.replace(path)
        with self._lock:
            self._index_key = None
        return Skill(skill.name, skill.description, skill.version, skill.body, path)

    def _free_name(self, name: str) -> str:
        taken = {p.name for p in self.directory.iterdir()}
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name[:60]}-{n}", n + 1
        return candidate

    def _index(self) -> tuple[builtins.list[Skill], np.ndarray]:
        files = sorted(self.directory.glob("*/SKILL.md"))
        key = tuple((str(p), p.stat().st_mtime_ns) for p in files)
        with self._lock:
            if key == self._index_key:
                return self._skills, self._vectors
            skills = []
            for path in files:
                try:
                    skills.append(parse(path.read_text(encoding="utf-8"), path))
                except (OSError, SkillFormatError) as exc:
                    log.warning("ignoring skill %s: %s", path, exc)
            skills.sort(key=lambda s: s.name)
            vectors = (np.asarray(self.embedder.embed([s.description for s in skills]), dtype=np.float32)
                       if skills else np.zeros((0, 0), dtype=np.float32))
            self._skills, self._vectors, self._index_key = skills, vectors, key
            return skills, vectors


def _description(request: str) -> str:
    text = " ".join(request.split())
    return text if len(text) <= 300 else text[:297] + "..."
