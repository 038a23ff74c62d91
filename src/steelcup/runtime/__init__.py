"""steelcup.runtime package."""
