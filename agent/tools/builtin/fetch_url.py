"""``fetch_url``: fetch a web page (httpx) and return its text, truncated."""

from __future__ import annotations

import re

import httpx

from agent.tools.registry import ToolContext, ToolError, tool

MAX_CHARS = 20_000  # keeps one page from filling the context window (~5k tokens)
TIMEOUT_S = 15.0


@tool("fetch_url", "Fetch an http(s) URL and return the response text (HTML tags stripped, "
      f"at most {MAX_CHARS} characters).",
      {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
      timeout=TIMEOUT_S + 5)
def fetch_url(args: dict, ctx: ToolContext) -> str:
    """Return ``status`` line plus the body text of ``args["url"]``.

    Raises:
        ToolError: not an http(s) URL, or the request failed (no network is a failure too).
    """
    url = str(args.get("url", ""))
    if not re.match(r"^https?://", url):
        raise ToolError("url must start with http:// or https://")
    try:
        response = httpx.get(url, timeout=TIMEOUT_S, follow_redirects=True,
                             headers={"User-Agent": "HermesMax-agent/0.1"})
    except httpx.HTTPError as exc:
        raise ToolError(f"could not fetch {url}: {exc}") from exc
    text = response.text
    if "html" in response.headers.get("content-type", ""):
        text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
        text = re.sub(r"(?s)<[^>]+>", " ", text)
        text = re.sub(r"\s+", " ", text).strip()
    return f"HTTP {response.status_code}\n{text[:MAX_CHARS]}"
