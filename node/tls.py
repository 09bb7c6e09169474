"""TLS on the client port and the HTTP port: the server's ``ssl.SSLContext``, built from files and
swapped on SIGHUP.

Theory of operation. ``ServerTls`` loads the certificate chain, the private key and (for mutual
TLS) the CA that client certificates must chain to into one context; listeners ask for
``current`` for every connection they accept, so a context loaded by ``reload`` serves new
connections while connections already open keep the one they shook hands with. A reload that
fails (a missing file, a key that does not match, a key readable by others) logs one ERROR line
and keeps the old context. The handshake itself is asyncio's (``connect_accepted_socket`` with
``ssl=``), bounded by ``handshake_timeout_s`` (``--tls-handshake-timeout``): a client that connects and never finishes the
handshake is dropped then. A failed handshake (plaintext, an untrusted certificate, no client
certificate with mutual TLS) closes the connection at once; ``accept.py`` logs it as one line.
"""

from __future__ import annotations

import logging
import os
import ssl

from .config import ConfigError, check_private

log = logging.getLogger("beanraft.tls")

#: Default seconds a client has, from its connection being accepted, to finish the handshake.
HANDSHAKE_TIMEOUT_S = 10.0


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, no compression, Python's default cipher choice; with
    ``client_ca``, a client must present a certificate issued by it. Raises ConfigError (a key
    file that group or others may read) or OSError/ssl.SSLError."""
    check_private("--tls-key", key, os.stat(key).st_mode)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ServerTls:
    """The context new connections get; ``reload`` reads the files again."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S):
        self.files = (cert, key, client_ca)
        self.handshake_timeout_s = handshake_timeout_s
        self.current = server_context(*self.files)

    def reload(self) -> bool:
        """Load the files again; on failure log why and keep serving with the old context."""
        try:
            context = server_context(*self.files)
        except (OSError, ConfigError) as exc:  # ssl.SSLError is an OSError
            log.error("TLS certificates not reloaded from %s and %s, the previous ones stay in "
                      "use: %s", self.files[0], self.files[1], describe(exc))
            return False
        self.current = context
        log.info("TLS certificates reloaded from %s; new connections use them", self.files[0])
        return True


def describe(exc: BaseException) -> str:
    """One line for a TLS or file error (an SSLError's str() carries the library's codes)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return " ".join(str(exc).split()) or type(exc).__name__
