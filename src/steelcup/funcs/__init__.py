"""Funcs: HTTP-triggered containers (docs/funcs.md)."""
