"""Tools the agent can call: a registry that imports no tool, and one module per built-in tool."""
