"""The ``hermes`` command line."""
