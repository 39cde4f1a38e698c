"""The plain functions behind the CLI commands (the CLI only parses and prints; tests call these)."""
