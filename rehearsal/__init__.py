"""The production path rehearsed on one machine (``hermes rehearsal``, ``make rehearsal``).

Only the internet's edge is replaced (``standins/``) plus the Pulumi engine (``engine``), the
SSH transport of the archive step (``ssh_standin``) and systemd (``units``); see ``run``.
"""
