"""The wire protocol shared by the control plane and the agent: envelopes, events and the bus.

This package is the only code that crosses the line between ``control/`` and ``agent/``
(see DESIGN.md, "Repository layout").
"""
