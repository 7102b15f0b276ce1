"""Built-in tools; each module registers itself (listed in ``agent.tools.loader``)."""
