"""VM sources: where the runtime gets a booted VM (direct boot now; template and cache later)."""
