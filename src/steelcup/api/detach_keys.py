"""Docker's detach keys: the key sequence (`ctrl-p,ctrl-q` unless the client names another)
that, typed into an attached terminal, ends the client's session and leaves the container
running. Pure: parsing, and a scanner over the client's stdin."""

from __future__ import annotations

from steelcup.errors import InvalidArgument

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q
# docker's names for control characters: ctrl-@ is 0, ctrl-a..ctrl-z 1..26, then [ \ ] ^ _
_CTRL = {f"ctrl-{c}": i for i, c in enumerate("@abcdefghijklmnopqrstuvwxyz[\\]^_")}


def parse_detach_keys(text: str) -> bytes:
    """`ctrl-p,ctrl-q` -> b"\\x10\\x11"; "" -> the default. InvalidArgument as dockerd."""
    if not text:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1 and key.isascii():
            out.append(ord(key))
        elif key.lower() in _CTRL:
            out.append(_CTRL[key.lower()])
        else:
            raise InvalidArgument(f"Invalid detach keys ({text}) provided")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in a stream of stdin chunks; what is not part of it passes
    through. A partial match is held back until the next chunk decides (dockerd's escape
    proxy does the same: the keys of a completed sequence never reach the container)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = 0  # bytes of `keys` matched so far, not yet passed on

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, whether the sequence was completed: detach now)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            if byte == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                out += self.keys[: self._held]
                self._held = 0
                if byte == self.keys[0]:
                    self._held = 1
                    continue
            out.append(byte)
        return bytes(out), False
