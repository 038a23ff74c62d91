"""steelcup.guest package."""
