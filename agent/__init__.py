"""The agent runtime installed on every tenant VM (DESIGN.md, "agent/")."""
