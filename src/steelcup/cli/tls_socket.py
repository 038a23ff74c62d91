"""A blocking TLS client socket that can half-close, for the CLI's connections to a tcp://
daemon.

docker's attach ends stdin with a half-close; over TLS that is a close_notify alert after
which the output keeps coming. `ssl.SSLSocket.unwrap()` cannot do that: it goes on to wait for
the daemon's close_notify and discards the output that arrives first. Here TLS runs over memory
BIOs, so `shutdown(SHUT_WR)` sends close_notify and nothing else, and reading goes on.

Stdin is pumped from a thread while the main thread reads: every TLS call holds one lock, and
the raw socket is read outside it.
"""

from __future__ import annotations

import socket
import ssl
import threading

from steelcup.tls_bio import read_available

_CHUNK = 64 * 1024


class TlsSocket:
    """The subset of a socket the CLI's client uses: recv, sendall, shutdown, settimeout,
    fileno, close."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str):
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._lock = threading.Lock()
        self._plain = bytearray()  # decrypted before our close_notify, not yet returned
        self._ended = False
        self._handshake()

    def _flush(self) -> None:
        """Send what TLS produced (called holding the lock, so records go out in order)."""
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(_CHUNK)
                if not data:
                    raise ConnectionResetError("the daemon closed during the TLS handshake") \
                        from None
                self._in.write(data)
        self._flush()

    def recv(self, n: int = _CHUNK) -> bytes:
        """Up to `n` bytes; b'' once the daemon closed (close_notify or the TCP stream)."""
        while True:
            with self._lock:
                if self._plain:
                    data = bytes(self._plain[:n])
                    del self._plain[:n]
                    return data
                if self._ended:
                    return b""
                try:
                    return self._tls.read(n)
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                finally:
                    self._flush()
            data = self.sock.recv(_CHUNK)
            with self._lock:
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        with self._lock:
            while view:
                written = self._tls.write(view[:_CHUNK])
                view = view[written:]
                self._flush()

    def shutdown(self, how: int) -> None:
        """SHUT_WR: close_notify, without waiting for the daemon's (its output keeps coming)."""
        if how == socket.SHUT_RD:
            self.sock.shutdown(how)
            return
        with self._lock:
            # What has arrived is decrypted first: unwrap() reads on after sending and would
            # discard it (only a partial record can be left, and reading completes it).
            data, ended = read_available(self._tls, _CHUNK)
            self._plain += data
            self._ended = self._ended or ended
            try:
                self._tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # sent; the daemon's own comes after its output
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                self._ended = True
            self._flush()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
