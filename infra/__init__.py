"""Pulumi programs of Hermes Max: the shared stack per environment and the tenant program.

``infra/__main__.py`` is the shared stack's entry point (``Pulumi.yaml``: ``main: infra/``);
``infra.tenant.build`` is the inline program ``HetznerProvisioner`` runs per tenant stack;
``infra/policy/`` is the CrossGuard policy pack.
"""
