"""Markdown as a model writes it → WhatsApp's text formatting.

WhatsApp formats a text message with its own markers
(https://faq.whatsapp.com/539178204879377, "How to format your messages";
https://developers.facebook.com/docs/whatsapp/cloud-api/messages/text-messages): ``*bold*``,
``_italic_``, ``~strikethrough~``, ```` ```monospace``` ```` blocks and `` `inline code` ``,
``- `` / ``* `` bullets, ``1. `` numbered lists and ``> `` quotes.  It has no headings, no
tables and no link syntax (a bare URL is made clickable), so:

* a heading becomes a bold line;
* a table becomes plain lines, one per row, its cells joined by `` · `` (the ``---`` rule dropped);
* ``[text](url)`` becomes ``text (url)`` (just ``url`` when the text is the URL);
* ``**bold**``/``__bold__`` → ``*bold*``, ``*italic*`` → ``_italic_``, ``~~strike~~`` → ``~strike~``.

Code spans and fenced blocks are kept verbatim (a fence loses its language tag, which WhatsApp
would show as text).
"""

from __future__ import annotations

import re

from control.channels.markdown import CODE_SPAN, LINK, convert_around, emphasis, rewrite_tables

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CELL_SEPARATOR = " · "


def to_whatsapp(text: str) -> str:
    """Convert Markdown ``text`` to WhatsApp formatting (see the module docstring).

    Returns the converted text; plain text without Markdown comes back unchanged.
    """
    return convert_around(_FENCE, text, _convert_prose,
                          lambda fence: "```" + fence.group(1).rstrip("\n") + "```")


def _convert_prose(text: str) -> str:
    text = rewrite_tables(text, lambda rows: [_row(line) for line in rows])
    return convert_around(CODE_SPAN, text, _convert_inline, lambda span: span.group(0))


def _link(match: re.Match) -> str:
    label, url = match.group(1), match.group(2)
    return url if label.strip() == url else f"{label} ({url})"


def _convert_inline(text: str) -> str:
    return emphasis(LINK.sub(_link, text))


def _row(line: str) -> str:
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return _CELL_SEPARATOR.join(cell for cell in cells if cell)
