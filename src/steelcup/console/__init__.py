"""The web console (docs/console.md): static pages served by the daemon on --console-listen,
talking only to the same Docker-compatible API on that listener."""
