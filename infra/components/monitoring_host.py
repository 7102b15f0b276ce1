"""The monitoring host: Prometheus, Alertmanager and Grafana on the private network.

Configured by the ``monitoring`` and ``node_exporter`` Ansible roles (scrape targets from the
inventory, alert rules and dashboards from ``dashboards/``). Operators reach Grafana (3000)
through an SSH tunnel via the control host; nothing here is public.
"""

from __future__ import annotations

import pulumi

from infra.components.host import HostArgs, SharedHost


class MonitoringHostArgs(HostArgs):
    """Args of ``MonitoringHost`` (exactly ``HostArgs``; a name of its own for call sites)."""


class MonitoringHost(SharedHost):
    """The monitoring server; no public IPv4 unless ``public_ipv4`` is set.

    Attributes:
        prometheus_url: ``http://<private ip>:9090``.
        grafana_url: ``http://<private ip>:3000``.
    """

    ROLE = "monitoring"
    TYPE = "hermes:infra:MonitoringHost"

    def _role_outputs(self, args: HostArgs) -> dict[str, pulumi.Output]:
        self.prometheus_url = pulumi.Output.concat("http://", self.private_ip, ":9090")
        self.grafana_url = pulumi.Output.concat("http://", self.private_ip, ":3000")
        return {"prometheus_url": self.prometheus_url, "grafana_url": self.grafana_url}
