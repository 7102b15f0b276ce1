"""Drafts before questions (issue 23): a large or open request gets a usable draft at once and
at most ``MAX_QUESTIONS`` questions in the same reply; the chat's next message is taken as the
answers and gets the revised draft.  The agent never waits on an answer to deliver something.

* ``triage`` decides, without a model call (so it costs nothing and never delays the turn),
  whether a message asks for something large or open: a request to make something (a verb of
  ``MAKE_VERBS`` leads it) that is either long (``LARGE_WORDS`` words or ``LARGE_ITEMS`` list
  items) or a sizeable piece of work (``OPEN_WORKS``) named in few words (``OPEN_WORDS``), so
  the details that matter are missing.
* The turn adds ``DRAFT_INSTRUCTION`` to the system prompt; ``shape`` then splits the reply
  into the draft and its questions, keeps the first ``MAX_QUESTIONS`` and reports a reply that
  has no draft (the turn asks the model once more for one).
* ``OpenQuestions`` keeps the questions per chat (``<data_dir>/drafts.db``); the next message in
  the chat takes them (``take``) and its turn adds ``REVISE_INSTRUCTION``.  Questions older
  than ``OPEN_FOR`` seconds are dropped: a message a day later is a new request.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent import schema

MAX_QUESTIONS = 3
"""At most this many questions per draft ("a few questions", issue 23)."""
OPEN_FOR = 24 * 3600.0
"""Seconds the questions of a draft stay open for answers."""
LARGE_WORDS = 60
LARGE_ITEMS = 3
OPEN_WORDS = 10
MAKE_VERBS = frozenset({
    "write", "draft", "plan", "design", "create", "build", "make", "prepare", "organise",
    "organize", "compose", "outline", "develop", "produce", "put", "come", "set", "help"})
OPEN_WORKS = frozenset({
    "plan", "strategy", "proposal", "website", "site", "app", "application", "report", "essay",
    "article", "blog", "post", "presentation", "deck", "itinerary", "trip", "holiday", "vacation",
    "wedding", "party", "event", "budget", "campaign", "course", "curriculum", "book", "novel",
    "story", "schedule", "routine", "program", "programme", "cv", "resume", "newsletter",
    "speech", "pitch", "business", "roadmap", "menu", "diet", "workout", "launch"})
QUESTIONS_HEADING = "Questions:"

DRAFT_INSTRUCTION = (
    "\n\n## Draft first, then ask\nThis request is large or leaves details open. Do not wait for "
    "answers: reply now with a complete, usable first draft built on sensible assumptions (say "
    f"briefly which). Then write a line \"{QUESTIONS_HEADING}\" followed by at most "
    f"{MAX_QUESTIONS} short numbered questions whose answers would most improve the draft. "
    "Write nothing after the questions.")
REVISE_INSTRUCTION = (
    "\n\n## Revise your draft\nYour previous reply was a first draft for this request:\n{request}\n"
    "You asked:\n{questions}\nThe user's new message answers some or all of these. Reply with the "
    "complete revised draft using their answers (keep your assumptions for anything left "
    "unanswered); ask no more questions. If the message is plainly about something else, just "
    "answer it.")
DRAFT_ONLY_PROMPT = (
    "Write a complete, usable first draft for this request now, on sensible assumptions, "
    "without asking anything:\n\n{request}")

_WORD = re.compile(r"[\w']+")
_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.M)
_HEADING = re.compile(r"^\s*[#*_]*\s*(?:open\s+)?questions\s*[*_]*\s*:?\s*[*_]*\s*$", re.I | re.M)
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


@dataclass(frozen=True)
class Triage:
    """Whether a message gets a draft and questions, and why (logged).

    Attributes:
        draft: True for a large or open request.
        reason: ``large``, ``open`` or ``direct``.
    """

    draft: bool
    reason: str


def triage(text: str) -> Triage:
    """Classify the user's message ``text`` (see the module docstring for the rule)."""
    words = [w.lower() for w in _WORD.findall(text)]
    leads = words[:3]
    if not words or not any(w in MAKE_VERBS for w in leads):
        return Triage(False, "direct")
    if len(words) >= LARGE_WORDS or len(_ITEM.findall(text)) >= LARGE_ITEMS:
        return Triage(True, "large")
    if len(words) <= OPEN_WORDS and any(w in OPEN_WORKS for w in words[1:]):
        return Triage(True, "open")
    return Triage(False, "direct")


@dataclass(frozen=True)
class Shaped:
    """A draft reply split up.

    Attributes:
        draft: the text before the questions (may be empty when the model only asked).
        questions: at most ``MAX_QUESTIONS`` questions, numbering removed.
    """

    draft: str
    questions: tuple[str, ...]

    def text(self) -> str:
        """The reply as the user gets it: the draft, then the numbered questions."""
        if not self.questions:
            return self.draft
        listed = "\n".join(f"{n}. {q}" for n, q in enumerate(self.questions, 1))
        return f"{self.draft}\n\n{QUESTIONS_HEADING}\n{listed}".strip()


def shape(reply: str) -> Shaped:
    """Split a model's draft reply into draft and questions (``MAX_QUESTIONS`` kept).

    The questions follow the last ``Questions:`` heading; without one, they are the reply's
    last lines that end with ``?``.
    """
    headings = list(_HEADING.finditer(reply))
    if headings:
        cut = headings[-1]
        draft, tail = reply[:cut.start()], reply[cut.end():].splitlines()
    else:
        lines = reply.rstrip().splitlines()
        split = len(lines)
        while split > 0 and lines[split - 1].strip().endswith("?"):
            split -= 1
        draft, tail = "\n".join(lines[:split]), lines[split:]
    questions = [q for q in (_NUMBERING.sub("", line).strip() for line in tail) if q]
    return Shaped(draft.strip(), tuple(questions[:MAX_QUESTIONS]))


@dataclass(frozen=True)
class Open:
    """A chat's open questions: the ``request`` the draft was for and its ``questions``."""

    request: str
    questions: tuple[str, ...]

    def instruction(self) -> str:
        """The system prompt section for the turn that takes the answers."""
        asked = "\n".join(f"{n}. {q}" for n, q in enumerate(self.questions, 1))
        return REVISE_INSTRUCTION.format(request=self.request[:4000], questions=asked)


# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS open_questions (
    chat_key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    questions TEXT NOT NULL,
    at REAL NOT NULL
);
""",
)


class OpenQuestions:
    """Open questions per chat, in SQLite.

    Args:
        path: database file (created if missing).
        clock: wall clock in Unix seconds (injectable for tests).
    """

    def __init__(self, path: str | Path, clock=time.time):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        schema.apply(self._db, "drafts", STEPS)
        self._lock = threading.Lock()
        self.clock = clock

    def ask(self, chat_key: str, request: str, questions: tuple[str, ...]) -> None:
        """Record ``questions`` about ``request`` as the chat's open ones (replacing older ones)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO open_questions (chat_key, request, questions, at)"
                             " VALUES (?, ?, ?, ?)", (chat_key, request, json.dumps(questions), self.clock()))

    def peek(self, chat_key: str) -> Open | None:
        """Return the chat's open questions without taking them (None when none or expired)."""
        with self._lock:
            row = self._db.execute("SELECT request, questions, at FROM open_questions WHERE chat_key = ?",
                                   (chat_key,)).fetchone()
        if row is None or self.clock() - row[2] > OPEN_FOR:
            return None
        return Open(row[0], tuple(json.loads(row[1])))

    def take(self, chat_key: str) -> Open | None:
        """Remove and return the chat's open questions (None when none or expired)."""
        found = self.peek(chat_key)
        with self._lock:
            self._db.execute("DELETE FROM open_questions WHERE chat_key = ?", (chat_key,))
        return found
