"""Markdown as a model writes it → Slack's ``mrkdwn`` (https://docs.slack.dev/messaging/formatting-message-text).

Slack differs from Markdown: bold is ``*bold*``, italic ``_italic_``, strike ``~strike~``, a
link ``<url|text>``; there are no headings and no tables; ``&``, ``<`` and ``>`` must be escaped
as ``&amp;``, ``&lt;``, ``&gt;`` ("Escaping text").  Code spans and fenced blocks are kept
verbatim (escaped only).  A Markdown table becomes a fenced block, so its columns stay aligned
in Slack's monospace rendering.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]+`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_BOLD_MARK = "\x01"  # stands for a converted bold asterisk until italics are done


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for its own markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(text: str) -> str:
    """Convert Markdown ``text`` to Slack mrkdwn (see the module docstring).

    Returns the converted text; plain text only gains the three escapes.
    """
    out, last = [], 0
    for fence in _FENCE.finditer(text):
        out.append(_convert_prose(text[last:fence.start()]))
        out.append(escape(fence.group(0)))
        last = fence.end()
    out.append(_convert_prose(text[last:]))
    return "".join(out)


def _convert_prose(text: str) -> str:
    text = _fence_tables(text)
    if "```" in text:  # a table became a fenced block: convert around it
        return to_mrkdwn(text)
    parts, last = [], 0
    for span in _CODE_SPAN.finditer(text):
        parts.append(_convert_inline(text[last:span.start()]))
        parts.append(escape(span.group(0)))
        last = span.end()
    parts.append(_convert_inline(text[last:]))
    return "".join(parts)


def _convert_inline(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match) -> str:
        links.append(f"<{match.group(2)}|{escape(match.group(1))}>")
        return f"\x02{len(links) - 1}\x02"

    text = _LINK.sub(keep_link, text)
    text = escape(text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return re.sub(r"\x02(\d+)\x02", lambda m: links[int(m.group(1))], text)


def _fence_tables(text: str) -> str:
    """Wrap each Markdown table (a ``|`` header row, a ``---`` rule, ``|`` rows) in a fence."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if (i + 1 < len(lines) and "|" in lines[i] and _TABLE_RULE.match(lines[i + 1])):
            end = i + 2
            while end < len(lines) and "|" in lines[end] and lines[end].strip():
                end += 1
            out.extend(["```", lines[i], *lines[i + 2:end], "```"])
            i = end
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)
