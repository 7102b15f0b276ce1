"""Errors raised by the wire protocol and bus implementations."""


class WireError(Exception):
    """Base class of every wire-protocol and bus error."""


class MalformedMessage(WireError):
    """A stream entry could not be decoded into an Envelope or Event."""


class BusUnavailable(WireError):
    """The bus backend (SQLite file or Redis server) could not be reached."""


class BusBackpressure(BusUnavailable):
    """A consumer group is too far behind; ``append`` refused the entry (retry later)."""


class BusAuthError(WireError):
    """The bus rejected our credentials (e.g. a wrong Redis ACL password)."""
