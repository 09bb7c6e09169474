"""A small blocking beanstalk client whose every call ends definitely, indefinitely, or not at all.

* A reply that arrived is definite: the call returns it as a tuple (``("INSERTED", 7)``,
  ``("RESERVED", 7, b"body")``, ``("NOT_FOUND",)``, ``("OK", b"---\\n...")``).
* Once a byte of the request may have left, a timeout, EOF or reset raises :class:`Indefinite`:
  the command may or may not have been executed, and the connection is unusable.
* Failing to connect raises :class:`Refused`: nothing was sent, so nothing happened.
"""

from __future__ import annotations

import socket
import time

_WITH_BODY = {b"RESERVED", b"FOUND"}
_WITH_INT = {b"INSERTED", b"BURIED", b"KICKED", b"WATCHING"}


class Indefinite(Exception):
    """The request may have been executed; the connection must be dropped."""


class Refused(Exception):
    """No connection: the request was never sent."""


class Conn:
    """One beanstalk connection with a deadline on every call."""

    def __init__(self, address: tuple[str, int], connect_timeout_s: float = 2.0):
        self.address = address
        try:
            self.sock = socket.create_connection(address, timeout=connect_timeout_s)
        except OSError as exc:
            raise Refused(f"{address}: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def call(self, line: str, body: bytes | None = None, timeout_s: float = 10.0) -> tuple:
        """Send one command (and its body); return the parsed reply or raise Indefinite."""
        if self.closed:
            raise Refused("connection already closed")
        data = line.encode() + b"\r\n"
        if body is not None:
            data += body + b"\r\n"
        deadline = time.monotonic() + timeout_s
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(data)
            head = self._line(deadline)
            words = head.split()
            tag = words[0] if words else b""
            if tag in _WITH_BODY and len(words) == 3:
                size = int(words[2])
                payload = self._exactly(size + 2, deadline)[:-2]
                return (tag.decode(), int(words[1]), payload)
            if tag == b"OK" and len(words) == 2:
                return ("OK", self._exactly(int(words[1]) + 2, deadline)[:-2])
            if tag in _WITH_INT and len(words) == 2:
                return (tag.decode(), int(words[1]))
            return tuple(w.decode(errors="replace") for w in words) or ("",)
        except (OSError, ValueError) as exc:
            self.close()
            raise Indefinite(f"{line.split()[0]}: {type(exc).__name__}: {exc}") from None

    def stats(self, command: str = "stats", timeout_s: float = 10.0) -> dict[str, str]:
        """A stats command's YAML mapping as str -> str."""
        reply = self.call(command, timeout_s=timeout_s)
        if reply[0] != "OK":
            raise Indefinite(f"{command}: {reply!r}")
        result = {}
        for entry in reply[1].decode().splitlines()[1:]:
            key, _, value = entry.partition(": ")
            result[key] = value
        return result

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("EOF")
        self._buffer += chunk

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill(deadline)
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
