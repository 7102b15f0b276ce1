"""Thin helpers over the official ``hcloud`` library (Hetzner Cloud API, docs.hetzner.cloud).

Used where Pulumi is the wrong tool: validating server type names at provision time (Hetzner has
renamed the seeds' CX21/CX41 twice: CX22/CX42, then cx23/cx33/cx43), sweeping servers by label
for orphans, and the base-image build.  No Pulumi import here.

The ``hcloud`` client retries ``rate_limit_exceeded`` (429), ``conflict``, ``timeout`` and
502/504 answers itself with truncated exponential backoff (hcloud-python ``Client`` docstring,
"Retry mechanism"); the API allows 3600 requests per hour per project (docs, "Rate Limiting").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

#: Hetzner Cloud API endpoint.
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
#: ``application_name`` sent in the User-Agent, so Hetzner support can see who calls.
APPLICATION = "hermes-max"


class ServerTypeRejected(ValueError):
    """A configured server type does not exist, or is deprecated or unavailable at a location."""


@dataclass(frozen=True)
class ServerTypeInfo:
    """What Hermes needs to know about one valid server type.

    Attributes:
        name: type name (``cx23``).
        cores: vCPUs.
        memory_gb: RAM, GB.
        disk_gb: local disk, GB.
    """

    name: str
    cores: int
    memory_gb: float
    disk_gb: int


def make_client(
    token: str, endpoint: str = DEFAULT_ENDPOINT, poll_interval: float = 1.0, timeout: float = 30.0
):
    """Return an ``hcloud.Client``.

    Args:
        token: project API token (read+write for sweeps and image builds).
        endpoint: API base URL (a local stand-in in tests).
        poll_interval: pause between action polls, seconds.
        timeout: HTTP request timeout, seconds.
    """
    from hcloud import Client

    return Client(
        token=token,
        api_endpoint=endpoint,
        application_name=APPLICATION,
        poll_interval=poll_interval,
        timeout=timeout,
    )


def label_selector(labels: dict[str, str]) -> str:
    """Return the equality label selector ``k1=v1,k2=v2`` (docs, "Label Selector")."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _deprecation_of(server_type, location: str | None):
    """The deprecation that applies to ``server_type`` at ``location`` (or ``None``).

    Since 2025-09 Hetzner announces deprecations per location (``locations[].deprecation``); the
    top-level ``deprecation`` is being phased out (Hetzner changelog 2025-09-24), so both count.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        top = server_type.deprecation
    if top is not None:
        return top
    for entry in server_type.locations or ():
        if location and entry.location.name == location and entry.deprecation is not None:
            return entry.deprecation
    return None


def validate_server_types(
    client, names: Iterable[str], location: str | None = None
) -> dict[str, ServerTypeInfo]:
    """Check ``names`` against ``GET /v1/server_types`` (one listing for all names).

    A type is rejected when the API does not list it, when it carries a deprecation (global or
    at ``location``), or when it lists its locations and ``location`` is missing or marked
    unavailable there.

    Returns:
        name → ``ServerTypeInfo`` for every name.

    Raises:
        ServerTypeRejected: a name is unknown, deprecated or unavailable (the message lists the
            current alternatives).
        hcloud.APIException: the API call failed after the library's own retries.
    """
    current = {st.name: st for st in client.server_types.get_all()}
    valid: dict[str, ServerTypeInfo] = {}
    for name in names:
        st = current.get(name)
        if st is None:
            raise ServerTypeRejected(
                f"server type {name!r} does not exist at Hetzner (renamed or removed); current "
                f"types: {', '.join(sorted(n for n, t in current.items() if not _deprecation_of(t, location)))}"
            )
        deprecation = _deprecation_of(st, location)
        if deprecation is not None:
            raise ServerTypeRejected(
                f"server type {name!r} is deprecated (announced {deprecation.announced:%Y-%m-%d}, "
                f"unavailable after {deprecation.unavailable_after:%Y-%m-%d}); pick a current type"
            )
        if location and st.locations:
            entry = next((e for e in st.locations if e.location.name == location), None)
            if entry is None or entry.available is False:
                raise ServerTypeRejected(f"server type {name!r} is not available in {location}")
        valid[name] = ServerTypeInfo(
            name=st.name, cores=st.cores, memory_gb=st.memory, disk_gb=st.disk
        )
    return valid


def list_servers(client, labels: dict[str, str]) -> list:
    """Return every server (``BoundServer``) carrying all ``labels``, across all pages."""
    return client.servers.get_all(label_selector=label_selector(labels))


def delete_server(client, server_id: int, wait: bool = True) -> bool:
    """Delete the server with ``server_id``; return ``False`` if it was already gone.

    Args:
        wait: wait for the ``delete_server`` action to finish.
    """
    from hcloud import APIException

    try:
        action = client.servers.get_by_id(server_id).delete()
    except APIException as err:
        if err.code == "not_found":
            return False
        raise
    if wait:
        action.wait_until_finished()
    return True
