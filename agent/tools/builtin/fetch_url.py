"""``fetch_url``: fetch a public web page and return its text, refusing internal addresses.

The model decides which URL to fetch, and a page it reads can tell it to fetch another
(prompt injection).  On a tenant VM, ``http://169.254.169.254/`` serves the server's
cloud-init user data, which holds the tenant's bus credentials and agent token, so this tool
only ever connects to public addresses (``address_refusal``).  Every hop is checked after DNS
resolution and the connection goes to the very address that was checked: the URL is rewritten
to the vetted IP while the ``Host`` header and the TLS server name (SNI, certificate check)
keep the hostname, so a second DNS answer (DNS rebinding) never reaches the socket.
Redirects are followed by hand, each one checked again.

The URL itself can carry data out (``https://x.example/?d=<a memory>``): in a turn that read
memory or a connected service, a host the user did not name is fetched only after their yes
(``sends_to``; ``agent.tools.egress``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from selectolax.lexbor import LexborHTMLParser

from agent.tools.registry import ToolContext, ToolError, tool

MAX_CHARS = 20_000  # keeps one page from filling the context window (~5k tokens)
MAX_BYTES = 2_000_000  # bytes of (decoded) body read per page; the rest is never downloaded
MAX_REDIRECTS = 5
TIMEOUT_S = 15.0  # seconds for the whole fetch, redirects included
USER_AGENT = "HermesMax-agent/0.1"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

# Cloud instance-metadata endpoints that are not already link-local or private: Alibaba
# (100.100.100.200), Oracle (192.0.0.192), Azure WireServer (168.63.129.16, a public address),
# plus the link-local/ULA ones of Hetzner/AWS/GCP/OpenStack (169.254.169.254), AWS ECS
# (169.254.170.2) and AWS IPv6 IMDS (fd00:ec2::254), named so the refusal says what they are.
# Sources: each provider's instance-metadata documentation.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "168.63.129.16",
    "fd00:ec2::254",
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix, embeds an IPv4

Resolver = Callable[[str, int], list[str]]
AddressPolicy = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], str | None]


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Return why ``ip`` may not be fetched (e.g. ``"a link-local address"``), or None if public.

    Refused: unspecified, loopback, link-local (169.254/16, fe80::/10), private (RFC 1918,
    RFC 4193 fc00::/7 and the rest of Python's ``is_private`` table), CGNAT 100.64/10
    (RFC 6598), multicast, reserved, anything else not globally routable (``is_global``, IANA
    special-purpose registries), cloud metadata addresses, and IPv6 forms that embed one of
    those IPv4 addresses (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} ({embedded}) in IPv6 form" if reason else None
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in METADATA_ADDRESSES, "a cloud metadata address"),
        (ip.version == 4 and ip in CGNAT, "a CGNAT (shared, RFC 6598) address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def system_resolver(host: str, port: int) -> list[str]:
    """Return the addresses ``host`` resolves to (``getaddrinfo``, TCP), in the system's order.

    Raises:
        ToolError: the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"could not resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Page:
    """A fetched page: final ``url``, HTTP ``status``, ``content_type``, ``text`` (decoded body),
    and ``truncated`` (True when the body was longer than the byte cap)."""

    url: str
    status: int
    content_type: str
    text: str
    truncated: bool


class SafeFetcher:
    """GETs public http(s) URLs only.

    Args:
        resolver: ``(host, port) -> [ip, ...]``; default ``system_resolver`` (tests inject
            answers here instead of editing /etc/hosts).
        policy: ``ip -> refusal reason | None``; default ``address_refusal``.  Production
            never changes it; tests that serve pages on loopback pass a policy admitting it.
        max_bytes: body bytes read per response (after content decoding); default ``MAX_BYTES``.
        max_redirects, timeout: redirects followed and seconds for the whole fetch.
        ssl_context: trust store for https; default the system's (tests pass their own CA).
    """

    def __init__(self, resolver: Resolver = system_resolver,
                 policy: AddressPolicy = address_refusal, max_bytes: int = MAX_BYTES,
                 max_redirects: int = MAX_REDIRECTS, timeout: float = TIMEOUT_S,
                 ssl_context: ssl.SSLContext | None = None):
        self.resolver, self.policy = resolver, policy
        self.max_bytes, self.max_redirects, self.timeout = max_bytes, max_redirects, timeout
        self.ssl_context = ssl_context

    def vetted_addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses, all of them checked by the policy.

        Raises:
            ToolError: ``refused: <ip> is <reason>`` when any address is refused (a name with
                one internal address among public ones is refused whole), or it does not resolve.
        """
        addresses = self.resolver(host, port)
        if not addresses:
            raise ToolError(f"could not resolve {host}")
        for address in addresses:
            reason = self.policy(ipaddress.ip_address(address.split("%")[0]))
            if reason:
                shown = address if address == host else f"{host} resolves to {address}, which"
                raise ToolError(f"refused: {shown} is {reason}")
        return addresses

    def fetch(self, url: str) -> Page:
        """GET ``url``, following at most ``max_redirects`` redirects, each checked again.

        Returns:
            The final ``Page``; its text holds at most ``max_bytes`` bytes of body.

        Raises:
            ToolError: not http(s), a refused address, too many redirects, time out, or the
                request failed.
        """
        deadline = time.monotonic() + self.timeout
        current = _parse(url)
        # trust_env=False: an HTTP(S)_PROXY from the environment would connect on our behalf
        # to whatever address it resolves, bypassing the check.
        with httpx.Client(trust_env=False, follow_redirects=False,
                          verify=self.ssl_context or True) as client:
            for _ in range(self.max_redirects + 1):
                page, location = self._get_once(client, current, deadline)
                if location is None:
                    return page
                current = _parse(str(current.join(location)))
        raise ToolError(f"refused: more than {self.max_redirects} redirects from {url}")

    def _get_once(self, client: httpx.Client, url: httpx.URL,
                  deadline: float) -> tuple[Page, str | None]:
        """One request to a vetted address; returns the page and the redirect target, if any."""
        host = url.raw_host.decode("ascii")
        addresses = self.vetted_addresses(host, url.port or (443 if url.scheme == "https" else 80))
        headers = {"Host": url.netloc.decode("ascii"), "User-Agent": USER_AGENT}
        last_error: Exception | None = None
        for address in addresses:
            request = client.build_request(
                "GET", url.copy_with(host=address.split("%")[0]), headers=headers,
                extensions={"sni_hostname": host, "timeout": _timeouts(deadline)})
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:  # try the host's next address
                last_error = exc
                continue
            except httpx.HTTPError as exc:
                raise ToolError(f"could not fetch {url}: {exc}") from exc
            try:
                return self._read(response, url, deadline)
            except httpx.HTTPError as exc:
                raise ToolError(f"could not fetch {url}: {exc}") from exc
            finally:
                response.close()
        raise ToolError(f"could not fetch {url}: {last_error}")

    def _read(self, response: httpx.Response, url: httpx.URL,
              deadline: float) -> tuple[Page, str | None]:
        content_type = response.headers.get("content-type", "")
        location = response.headers.get("location")
        if response.status_code in REDIRECT_STATUSES and location:
            return Page(str(url), response.status_code, content_type, "", False), location
        body, truncated = bytearray(), False
        for chunk in response.iter_bytes():
            if time.monotonic() > deadline:
                raise ToolError(f"could not fetch {url}: timed out after {self.timeout:g} s")
            body += chunk
            if len(body) > self.max_bytes:
                del body[self.max_bytes:]
                truncated = True
                break
        text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
        return Page(str(url), response.status_code, content_type, text, truncated), None


def html_text(html: str) -> str:
    """Return the visible text of ``html``: title and body, without script, style and the like.

    Parsed with selectolax's Lexbor engine (an HTML5-conformant parser), so comments, CDATA and
    broken markup are handled as a browser would; whitespace is collapsed to single spaces.
    """
    tree = LexborHTMLParser(html)
    tree.strip_tags(["script", "style", "noscript", "template", "iframe", "svg", "object"])
    title = tree.css_first("title")
    parts = [title.text() if title else "", tree.body.text(separator=" ") if tree.body else ""]
    return re.sub(r"\s+", " ", " ".join(parts)).strip()


def _parse(url: str) -> httpx.URL:
    """Return ``url`` parsed; raise ``ToolError`` unless it is an absolute http(s) URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolError(f"not a valid URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ToolError("url must start with http:// or https:// and name a host")
    return parsed


def _timeouts(deadline: float) -> dict[str, float]:
    """Per-operation httpx timeouts limited to the time left before ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ToolError("could not fetch: timed out")
    return {"connect": left, "read": left, "write": left, "pool": left}


DEFAULT_FETCHER = SafeFetcher()


@tool("fetch_url", "Fetch a public http(s) URL and return the response text (HTML reduced to its "
      f"visible text, at most {MAX_CHARS} characters). Internal and cloud metadata addresses "
      "are refused.",
      {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
      timeout=TIMEOUT_S + 5, sends_to="url")
def fetch_url(args: dict, ctx: ToolContext) -> str:
    """Return ``HTTP <status>`` and, on the next line, the text of ``args["url"]``.

    Uses the ``fetcher`` service when the runtime provides one (tests do, to reach local
    servers), else ``DEFAULT_FETCHER``.  HTML is reduced to text; other text types are returned
    as they are; the text is cut at ``MAX_CHARS`` characters.

    Raises:
        ToolError: not an http(s) URL, an internal address (``refused: ...``), not a text
            response, or the request failed (no network is a failure too).
    """
    fetcher = ctx.services.get("fetcher") or DEFAULT_FETCHER
    page = fetcher.fetch(str(args.get("url", "")))
    media_type = page.content_type.split(";")[0].strip().lower()
    if "html" in media_type:
        text = html_text(page.text)
    elif not media_type or media_type.startswith("text/") or media_type.endswith(("json", "xml")):
        text = page.text
    else:
        raise ToolError(f"{page.url} is {media_type}, not text")
    note = f"\n[body cut at {fetcher.max_bytes} bytes]" if page.truncated else ""
    return f"HTTP {page.status}\n{text[:MAX_CHARS]}{note}"
