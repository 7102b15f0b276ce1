"""SKILL.md documents in the agentskills format: YAML frontmatter, then Markdown steps.

Format (https://agentskills.io/specification): ``---`` fenced YAML with ``name`` (lowercase
letters, digits and hyphens, at most 64 characters) and ``description`` (what the skill does and
when to use it), here also ``version`` (semantic version); the body holds the steps.  Our body
has ``## Steps`` (numbered tool calls) and ``## Changes`` (one line per version).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

NAME_MAX = 64
STOP_WORDS = frozenset([
    "a", "an", "the", "and", "or", "to", "of", "for", "in", "on", "at", "by", "with", "me",
    "my", "please", "can", "you", "could", "would", "i", "it", "this", "that", "then", "is",
    "are", "be",
])


class SkillFormatError(ValueError):
    """A SKILL.md file has no valid frontmatter."""


@dataclass(frozen=True)
class Skill:
    """One skill: ``name``, ``description``, ``version``, Markdown ``body`` and its ``path``."""

    name: str
    description: str
    version: str
    body: str
    path: Path | None = None

    @property
    def document(self) -> str:
        """The SKILL.md text."""
        meta = yaml.safe_dump({"name": self.name, "description": self.description, "version": self.version},
                              sort_keys=False, allow_unicode=True).strip()
        return f"---\n{meta}\n---\n\n{self.body.strip()}\n"


def parse(text: str, path: Path | None = None) -> Skill:
    """Parse SKILL.md ``text``.

    Raises:
        SkillFormatError: no frontmatter, or ``name``/``description`` missing.
    """
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.DOTALL)
    if not match:
        raise SkillFormatError("SKILL.md must start with YAML frontmatter between --- lines")
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("description"):
        raise SkillFormatError("SKILL.md frontmatter needs name and description")
    return Skill(str(meta["name"]), str(meta["description"]), str(meta.get("version", "1.0.0")),
                 match.group(2).strip(), path)


def slug(text: str) -> str:
    """Return a skill name for a request: its first meaningful words, lowercase, hyphenated."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP_WORDS]
    name = "-".join(words[:6]) or "skill"
    return name[:NAME_MAX].strip("-")


def steps_markdown(steps) -> str:
    """Return numbered Markdown steps for ``ToolStep``s (tool name and input)."""
    lines = []
    for number, step in enumerate(steps, 1):
        note = " (failed last time: check its input)" if step.is_error else ""
        lines.append(f"{number}. Call `{step.name}` with `{json.dumps(step.input, ensure_ascii=False)}`{note}")
    return "\n".join(lines)


def bump(version: str) -> str:
    """Return ``version`` with the minor part incremented (``1.0.0`` → ``1.1.0``)."""
    parts = [*version.split("."), "0", "0"][:3]
    try:
        return f"{int(parts[0])}.{int(parts[1]) + 1}.0"
    except ValueError:
        return "1.1.0"


def today() -> str:
    """Today's date (UTC) as ``YYYY-MM-DD``, for change notes."""
    return datetime.now(UTC).strftime("%Y-%m-%d")
