"""TLS over memory BIOs, the piece both ends share: the API server's streams
(api/tls_stream.py) and the CLI's client socket (cli/tls_socket.py) run TLS this way so that a
close_notify is a half-close, not the end of the connection."""

from __future__ import annotations

import ssl


def read_available(tls: ssl.SSLObject, chunk: int) -> tuple[bytes, bool]:
    """Everything `tls` can decrypt from what has arrived so far, and whether the peer ended
    its side (its close_notify, or a TLS-level EOF). Reads nothing from the network."""
    out = bytearray()
    while True:
        try:
            data = tls.read(chunk)
        except ssl.SSLWantReadError:
            return bytes(out), False
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return bytes(out), True
        if not data:
            return bytes(out), True
        out += data
