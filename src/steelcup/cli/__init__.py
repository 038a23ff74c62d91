"""steelcup.cli package."""
