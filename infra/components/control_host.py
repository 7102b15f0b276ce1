"""The control host: the Flask control plane and bot gateway behind nginx with TLS.

The only server with public HTTP(S) (the ``web`` firewall); configured by the ``control``
Ansible role. It is also the SSH bastion to the private-only hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.components.host import HostArgs, SharedHost


@dataclass
class ControlHostArgs(HostArgs):
    """Args of ``ControlHost``: ``HostArgs`` with a public IPv4 address by default."""

    public_ipv4: bool = True


class ControlHost(SharedHost):
    """The control-plane server.

    Attributes:
        public_ipv4: its public IPv4 address (``Output[str]``), for DNS and webhooks.
    """

    ROLE = "control"
    TYPE = "hermes:infra:ControlHost"
