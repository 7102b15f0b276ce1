"""Plain-Python services of the control plane (no Flask imports)."""
