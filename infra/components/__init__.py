"""ComponentResources of the shared stack, one module per concern, each with an Args class."""
