"""The journal's fdatasync, in a small process of its own (started by ``background_sync.py``).

Run as a script (``python -I -S sync_helper.py FD``, standard library only) with one end of a
SOCK_SEQPACKET pair as FD. Each request is an 8-byte token with the journal's descriptor
attached (SCM_RIGHTS); the helper calls fdatasync on it, closes its copy and answers the token
with the errno (0: durable). It exits when the node's end of the pair closes, the node's
death included.
"""

import os
import socket
import struct
import sys

REQUEST = struct.Struct("<Q")
ANSWER = struct.Struct("<QI")


def serve(sock: socket.socket) -> None:
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, REQUEST.size, 1)
        except (ConnectionError, InterruptedError):
            return
        if not message:
            return
        (token,) = REQUEST.unpack(message)
        error = 0
        try:
            if not fds:
                error = 9  # EBADF: no descriptor came with the request
            else:
                os.fdatasync(fds[0])
        except OSError as exc:
            error = exc.errno or 5  # EIO when the kernel gave none
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(ANSWER.pack(token, error))
        except OSError:
            return


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
