"""Container ids and names: generation and validation (pure apart from the random source)."""

from __future__ import annotations

import re
import secrets

from steelcup.errors import InvalidArgument

# Docker's rule. fullmatch, not `$`: Python's `$` also matches before a trailing newline.
_NAME_RE = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_MAX = 255  # a host name and a /etc/hosts entry in the other containers' guests

_LEFT = (
    "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "quirky", "serene", "stoic", "tender", "vibrant", "wizardly", "zealous",
)
_RIGHT = (
    "babbage", "curie", "dijkstra", "euler", "feynman", "galois", "hopper", "knuth", "lamport",
    "lovelace", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wirth",
)


def new_id() -> str:
    """A 64-hex container or exec id, like docker's."""
    return secrets.token_hex(32)


def random_name() -> str:
    return f"{secrets.choice(_LEFT)}_{secrets.choice(_RIGHT)}_{secrets.randbelow(1000)}"


def validate_name(name: str) -> str:
    """Docker's name rule; returns the name without a leading slash."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f'Invalid container name ({name!r}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
        )
    if len(name.lstrip("/")) > NAME_MAX:
        raise InvalidArgument(f"Invalid container name: longer than {NAME_MAX} characters")
    return name.lstrip("/")
