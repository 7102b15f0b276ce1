"""The Markdown pieces a model's replies use, for the channels that rewrite them in their own
markers (``slack_mrkdwn``, ``whatsapp_format``).

The patterns follow CommonMark (https://spec.commonmark.org/0.31.2/) as far as model output
needs: ``**bold**``/``__bold__``, ``*italic*``, ``~~strike~~`` (GitHub's extension,
https://github.github.com/gfm/#strikethrough-extension-), ``[text](http(s)://url)``, ATX
headings, `` `code` `` spans and GFM tables (a ``|`` header row over a ``---`` delimiter row,
https://github.github.com/gfm/#tables-extension-).
"""

from __future__ import annotations

import re
from collections.abc import Callable

CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_BOLD_MARK = "\x01"  # stands for a converted bold asterisk until italics are done


def convert_around(pattern: re.Pattern, text: str, convert: Callable[[str], str],
                   keep: Callable[[re.Match], str]) -> str:
    """Rewrite ``text`` piecewise: each match of ``pattern`` (a code fence or span) becomes
    ``keep(match)``, every stretch between matches ``convert(stretch)``; returns the joined text."""
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(convert(text[last:match.start()]))
        out.append(keep(match))
        last = match.end()
    out.append(convert(text[last:]))
    return "".join(out)


def emphasis(text: str, bullets: Callable[[str], str] | None = None) -> str:
    """Rewrite headings and bold as ``*bold*``, italic as ``_italic_`` and strike as ``~strike~``
    (the markers Slack and WhatsApp share); a heading becomes a bold line.

    ``bullets``, when given, rewrites list markers after headings and bold and before italics
    (a heading's ``\\s+`` may run over a line break, and italics must not see a ``*`` bullet).
    """
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    if bullets is not None:
        text = bullets(text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    return text.replace(_BOLD_MARK, "*")


def rewrite_tables(text: str, render: Callable[[list[str]], list[str]]) -> str:
    """Replace each Markdown table in ``text`` by ``render(rows)``: ``rows`` are its header line
    then its body lines (the ``---`` delimiter row left out); returns the rewritten text."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and "|" in lines[i] and _TABLE_RULE.match(lines[i + 1]):
            end = i + 2
            while end < len(lines) and "|" in lines[end] and lines[end].strip():
                end += 1
            out.extend(render([lines[i], *lines[i + 2:end]]))
            i = end
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)
