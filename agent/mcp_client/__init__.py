"""MCP client of the agent: the tenant's MCP servers' tools offered to the model next to the built-ins.

* ``config``: the ``mcpServers`` JSON (file and setting), validation, merging, secrets.
* ``naming``: model-facing tool names (``<server>__<tool>``) and result text.
* ``connection``: one server's session (stdio or streamable HTTP) on the asyncio loop.
* ``manager``: the event-loop thread, the sync facade the tool loop calls, breakers and
  registration into the runtime's tool registry.
"""
