"""Local stand-ins for internet services, speaking their published wire formats (tests, demos)."""
