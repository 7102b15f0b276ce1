"""Markdown as a model writes it → Slack's ``mrkdwn`` (https://docs.slack.dev/messaging/formatting-message-text).

Slack differs from Markdown: bold is ``*bold*``, italic ``_italic_``, strike ``~strike~``, a
link ``<url|text>``; there are no headings and no tables; ``&``, ``<`` and ``>`` must be escaped
as ``&amp;``, ``&lt;``, ``&gt;`` ("Escaping text").  Code spans and fenced blocks are kept
verbatim (escaped only).  A Markdown table becomes a fenced block, so its columns stay aligned
in Slack's monospace rendering.
"""

from __future__ import annotations

import re

from control.channels.markdown import CODE_SPAN, LINK, convert_around, emphasis, rewrite_tables

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for its own markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(text: str) -> str:
    """Convert Markdown ``text`` to Slack mrkdwn (see the module docstring).

    Returns the converted text; plain text only gains the three escapes.
    """
    return convert_around(_FENCE, text, _convert_prose, lambda fence: escape(fence.group(0)))


def _convert_prose(text: str) -> str:
    text = rewrite_tables(text, lambda rows: ["```", *rows, "```"])
    if "```" in text:  # a table became a fenced block: convert around it
        return to_mrkdwn(text)
    return convert_around(CODE_SPAN, text, _convert_inline, lambda span: escape(span.group(0)))


def _convert_inline(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match) -> str:
        links.append(f"<{match.group(2)}|{escape(match.group(1))}>")
        return f"\x02{len(links) - 1}\x02"

    text = LINK.sub(keep_link, text)
    text = escape(text)
    text = emphasis(text, bullets=lambda t: _BULLET.sub(lambda m: f"{m.group(1)}• ", t))
    return re.sub(r"\x02(\d+)\x02", lambda m: links[int(m.group(1))], text)
