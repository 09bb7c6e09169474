"""Helpers of the authentication tests: principals with fresh tokens, an auth file written 0600,
and a line client that reads whole replies (a line, and the body of OK, FOUND and RESERVED)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from beanraft.node import principals as auth

BODY_REPLY = re.compile(rb"^(OK|FOUND \d+|RESERVED \d+) (\d+)$")


class Principals:
    """name -> token, and the TOML of an auth file giving each principal its rights."""

    def __init__(self):
        self.tokens: dict[str, str] = {}
        self.entries: dict[str, dict] = {}

    def add(self, name: str, *, subject: str | None = None, token: bool = True,
            **rights: list[str]) -> str | None:
        secret = auth.new_token() if token else None
        if secret:
            self.tokens[name] = secret
        entry = {"token-hash": auth.hash_token(secret, n=2**10)} if secret else {}
        if subject:
            entry["tls-subject"] = subject
        entry.update(rights)
        self.entries[name] = entry
        return secret

    def toml(self) -> str:
        lines = []
        for name, entry in self.entries.items():
            lines.append(f"[principal.{name}]")
            for key, value in entry.items():
                if isinstance(value, list):
                    value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
                else:
                    value = f'"{value}"'
                lines.append(f"{key} = {value}")
            lines.append("")
        return "\n".join(lines)

    def write(self, path: Path) -> Path:
        path.write_text(self.toml())
        os.chmod(path, 0o600)
        return path


class Line:
    """A blocking connection that sends raw bytes and reads exact replies."""

    def __init__(self, address, timeout_s: float = 15.0, source: str | None = None):
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout_s)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(
                address, timeout=timeout_s, source_address=(source, 0) if source else None)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> bytes:
        """One whole reply, CRLFs included."""
        line = self._line()
        match = BODY_REPLY.match(line)
        if not match:
            return line + b"\r\n"
        size = int(match.group(2)) + 2
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a body")
            self.buffer += chunk
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return line + b"\r\n" + body

    def request(self, data: bytes, replies: int = 1) -> bytes:
        self.send(data)
        return b"".join(self.reply() for _ in range(replies))

    def auth(self, name: str, token: str) -> bytes:
        return self.request(f"auth {name} {token}\r\n".encode())

    def close(self) -> None:
        self.sock.close()
