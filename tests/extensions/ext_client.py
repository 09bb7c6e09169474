"""A blocking line client for the real-process tests of the extensions: LineClient plus
session-id, session-resume and put-key, over raw bytes."""

from __future__ import annotations

from cluster.cluster_harness import LineClient


class ExtClient(LineClient):
    """A LineClient that also speaks the extensions."""

    def session_id(self) -> bytes:
        reply = self.request(b"session-id")
        assert reply.startswith(b"SESSION "), reply
        return reply.split()[1]

    def resume(self, session_id: bytes) -> list[int] | None:
        """The job ids of RESUMED, or None for NOT_FOUND."""
        reply = self.request(b"session-resume " + session_id)
        if reply == b"NOT_FOUND":
            return None
        assert reply.startswith(b"RESUMED "), reply
        data = self.read_exactly(int(reply.split()[1]) + 2)[:-2].decode()
        assert data.startswith("---\n"), data
        return [int(line[2:]) for line in data[4:].splitlines()]

    def put_key(self, key: bytes, body: bytes, ttr: int = 60) -> int:
        reply = self.request(b"put-key %s 0 0 %d %d\r\n%s" % (key, ttr, len(body), body))
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])


def try_put_key(nodes, key: bytes, body: bytes = b"retry") -> int | None:
    """The id of a keyed put through the first node of ``nodes`` that answers, else None."""
    for node in nodes:
        try:
            with ExtClient(node.client_address, timeout_s=5) as client:
                return client.put_key(key, body)
        except (OSError, AssertionError, TimeoutError):
            continue
    return None
