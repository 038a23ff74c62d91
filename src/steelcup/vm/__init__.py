"""steelcup.vm package."""
