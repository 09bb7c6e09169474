"""A blocking beanstalk connection for the admin CLI, and the meaning of each error reply.

The CLI speaks the wire through ``beanraft.protocol``'s sans-I/O ``ClientConnection`` (the node
layer may not import ``beanraft.client``): this module only moves bytes over one socket, with a
timeout on every request. Error replies become ``AdminError`` with an operator's message and the
exit status documented in docs/reference/cli.md.
"""

from __future__ import annotations

import socket
import ssl

from beanraft import protocol as p
from beanraft.protocol.client import ClientConnection, ProtocolError

DEFAULT_ADDRESS = "127.0.0.1:11300"
#: The largest reply the CLI accepts (a job body or a YAML document), in bytes.
MAX_REPLY_BODY = p.MAX_JOB_SIZE_LIMIT

# Exit statuses (docs/reference/cli.md#exit-status-of-the-admin-commands).
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_TOO_BIG = 5
EXIT_NO_ROOM = 6
EXIT_SERVER_ERROR = 7
EXIT_UNREACHABLE = 8
EXIT_BAD_BINLOG = 9

_ERRORS = {
    p.NotFound: (EXIT_NOT_FOUND, "not found"),
    p.UnknownCommand: (EXIT_REFUSED, "the server does not know this command: it is not BeanRaft "
                       "(a plain beanstalkd?) or a BeanRaft without the admin commands"),
    p.BadFormat: (EXIT_REFUSED, "the server refused the command as malformed"),
    p.JobTooBig: (EXIT_TOO_BIG, "the job is larger than the server's maximum job size (-z)"),
    p.ExpectedCrlf: (EXIT_TOO_BIG, "the server did not get the job body it expected"),
    p.Draining: (EXIT_NO_ROOM, "the server is draining: it accepts no new jobs"),
    p.OutOfMemory: (EXIT_NO_ROOM, "the server has no room (memory or disk) for this change"),
    p.InternalError: (EXIT_SERVER_ERROR, "internal error on the server"),
    p.PermissionDenied: (EXIT_REFUSED, "permission denied: the principal may not do this to "
                         "that tube (docs/reference/auth-file.md)"),
    p.AuthRequired: (EXIT_REFUSED, "the node requires authentication: give --principal and "
                     "--token-file (or BEANRAFT_TOKEN)"),
}

#: The environment variables the CLI takes a principal's name and token from.
PRINCIPAL_ENV, TOKEN_ENV, TOKEN_FILE_ENV = "BEANRAFT_PRINCIPAL", "BEANRAFT_TOKEN", "BEANRAFT_TOKEN_FILE"


class AdminError(Exception):
    """A command failed; ``status`` is the CLI's exit status, ``str()`` the message."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PipelineBroken(AdminError):
    """The connection failed inside a pipeline; ``replies`` are those received before."""

    def __init__(self, message: str, replies: list):
        super().__init__(message, EXIT_UNREACHABLE)
        self.replies = replies


def error_of(reply) -> AdminError:
    """The AdminError that an unexpected ``reply`` means."""
    status, message = _ERRORS.get(type(reply), (EXIT_SERVER_ERROR, f"unexpected reply {reply}"))
    return AdminError(message, status)


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                use_tls: bool) -> ssl.SSLContext | None:
    """The client context for a node's TLS client port, or None for plaintext.

    ``ca_file`` (else the system's trust store when ``use_tls``) verifies the node's certificate
    and host name; ``cert_file`` and ``key_file`` present a client certificate (mutual TLS).
    """
    if not (use_tls or ca_file or cert_file):
        return None
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise AdminError(f"cannot load the TLS files: {exc}", 2) from None
    return context


def credentials(principal: str | None, token_file: str | None,
                env: dict | None = None) -> tuple[str, str] | None:
    """(principal, token) for ``auth``, the token from ``token_file`` (mode 0600) or else the
    BEANRAFT_TOKEN environment variable; None without a principal."""
    import os

    env = os.environ if env is None else env
    if not principal:
        return None
    if token_file:
        try:
            with open(token_file) as f:
                if os.fstat(f.fileno()).st_mode & 0o077:
                    raise AdminError(f"{token_file} is accessible by group or others: chmod 600 "
                                     f"{token_file}", 2)
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"cannot read the token file {token_file}: {exc}", 2) from None
    else:
        token = env.get(TOKEN_ENV, "").strip()
    if not token:
        raise AdminError(f"--principal {principal} needs --token-file or {TOKEN_ENV}", 2)
    return principal, token


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not p.is_decimal(port, 5) or not 0 < int(port) < 65536:
        raise AdminError(f"not a HOST:PORT address: {address}", 2)
    return host, int(port)


class AdminConnection:
    """One connection to a node's client port; ``request`` sends one request, returns its reply."""

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout: float = 5.0,
                 tls: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None):
        self.address = address
        host, port = parse_address(address)
        self._codec = ClientConnection(MAX_REPLY_BODY)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise AdminError(f"cannot connect to {address}: {exc.strerror or exc}",
                             EXIT_UNREACHABLE) from None
        try:
            self._sock = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise AdminError(f"TLS with {address} failed: {exc}", EXIT_UNREACHABLE) from None
        if auth is not None:
            reply = self.request(p.Auth(*auth))
            if not isinstance(reply, p.Authenticated):
                self.close()
                raise AdminError(f"{address} refused the authentication of principal {auth[0]}"
                                 f" ({p.encode(reply).strip().decode()})", EXIT_REFUSED)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AdminConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def request(self, req) -> object:
        """The reply to ``req``; raises AdminError when the connection fails."""
        try:
            self._sock.sendall(self._codec.send(req))
            while (reply := self._codec.next_reply()) is p.NEED_DATA:
                data = self._sock.recv(65536)
                if not data:
                    raise AdminError(f"{self.address} closed the connection", EXIT_UNREACHABLE)
                self._codec.receive_data(data)
        except (OSError, ProtocolError) as exc:
            raise AdminError(f"{self.address}: {exc}", EXIT_UNREACHABLE) from None
        return reply

    def pipeline(self, requests: list) -> list:
        """The replies to ``requests``, all sent at once and answered in order.

        Raises ``PipelineBroken`` (an AdminError) carrying the replies that did arrive when the
        connection fails part-way: the requests after them may or may not have been applied.
        """
        replies: list = []
        try:
            self._sock.sendall(b"".join(self._codec.send(req) for req in requests))
            while len(replies) < len(requests):
                reply = self._codec.next_reply()
                if reply is not p.NEED_DATA:
                    replies.append(reply)
                    continue
                data = self._sock.recv(65536)
                if not data:
                    raise PipelineBroken(f"{self.address} closed the connection", replies)
                self._codec.receive_data(data)
        except (OSError, ProtocolError) as exc:
            raise PipelineBroken(f"{self.address}: {exc}", replies) from None
        return replies

    def expect(self, req, *wanted: type, what: str = "") -> object:
        """The reply to ``req`` if it is one of ``wanted``; else AdminError with its meaning."""
        reply = self.request(req)
        if isinstance(reply, wanted):
            return reply
        status, message = _ERRORS.get(type(reply), (EXIT_SERVER_ERROR, f"unexpected reply {reply}"))
        if what and isinstance(reply, p.NotFound):
            message = f"{what}: not found"
        raise AdminError(message, status)


def parse_yaml(data: bytes) -> dict | list:
    """beanstalkd's YAML subset: a flat mapping, a list of scalars, or a list of flat mappings
    (list-jobs). Numbers become ints."""
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or lines[0] != "---":
        raise AdminError("the server's YAML does not start with ---", EXIT_SERVER_ERROR)
    body = lines[1:]
    if not body:
        return []
    if not body[0].startswith("- "):
        return dict(_pair(line) for line in body)
    if ": " not in body[0]:
        return [_scalar(line[2:]) for line in body]
    records: list[dict] = []
    for line in body:
        if line.startswith("- "):
            records.append({})
        key, value = _pair(line[2:])
        records[-1][key] = value
    return records


def _pair(line: str) -> tuple[str, object]:
    key, _, value = line.partition(": ")
    return key.strip(), _scalar(value)


def _scalar(text: str) -> object:
    if p.is_decimal(text, 20):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text
