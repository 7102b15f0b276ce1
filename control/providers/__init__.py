"""Machine providers: the ``Provisioner`` interface and its implementations."""
