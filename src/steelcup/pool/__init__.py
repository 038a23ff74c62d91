"""VM sources: where the runtime gets a booted VM from (direct boot now; template and cache later)."""
