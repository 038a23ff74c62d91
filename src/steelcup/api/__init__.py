"""steelcup.api package."""
