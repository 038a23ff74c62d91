"""steelcup.image package."""
