"""steelcup.state package."""
