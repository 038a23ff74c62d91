"""Fixtures of the runtime's unit tests."""

from tests.unit.runtime.support import plain_dirs

__all__ = ["plain_dirs"]
