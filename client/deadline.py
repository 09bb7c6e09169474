"""When an awaited reply is overdue: the rule that fails a node that is silent, or that trickles.

Theory of operation. Replies come in the order of their requests, so one reply is awaited at a
time: the one at the head of the queue. It is *due* from when its request was sent, or from
when the reply before it was complete, whichever is later. It is overdue, and the node counts
as failed, at the earlier of two moments:

* silence: ``timeout_s + block_s`` after its last byte arrived (or after it became due);
* completion: ``timeout_s + block_s + received / min_rate`` after it became due, where
  ``received`` counts the bytes of this reply that have arrived.

``block_s`` is how long the server may legitimately keep the reply back (a reserve slice).
Silence alone is not enough: a node that sends one byte every ``timeout_s`` - ε seconds (a
half-dead node, a man in the middle) would keep the client waiting for ever. A fixed time to
completion is not enough either: a job body of many MB on a slow link takes longer than
``timeout_s`` to arrive and must not be cut. So every byte that arrives buys time for the rest:
a reply that keeps coming at ``min_rate`` or faster is never cut (unless it stalls for
``timeout_s``), while a trickle earns next to nothing (a byte buys 61 µs at 16 KiB/s).

The bound: a reply is complete, or its node failed, ``timeout_s + block_s + size / min_rate``
after it became due, ``size`` being at most a 512-byte line and a 1 GiB body (the parser's
bounds). Each reply of a pipeline has its own budget, started when the one before it is
complete, so a pipeline of replies is bounded by the sum of theirs. The credit comes from bytes
that arrived, never from the size a reply announces: a node that announces a 1 GiB body and
then trickles it is cut once it falls ``timeout_s`` behind ``min_rate``.
"""

from __future__ import annotations

# A link slower than 16 KiB/s (128 kbit/s) cannot carry a work queue's job bodies of many MB
# anyway; every link a cluster is run over is faster, so a large body that keeps coming is never
# cut. A node that keeps just above the rate holds a reply longest when the reply is largest:
# the largest body (1 GiB) may take up to 18 h, an ordinary reply (a line, a body of a few KB)
# less than a second beyond timeout_s.
MIN_REPLY_RATE_BYTES_PER_S = 16 * 1024


class ReplyClock:
    """When the reply at the head of the queue became due, and what of it has arrived since."""

    __slots__ = ("due", "heard", "received")

    def __init__(self) -> None:
        self.due = 0.0  # when the awaited reply became due (monotonic seconds)
        self.heard = 0.0  # when its last byte arrived, or when it became due
        self.received = 0  # how many of its bytes have arrived

    def start(self, now: float, buffered: int = 0) -> None:
        """The next reply is due from ``now``; ``buffered`` of its bytes arrived already (they
        came with the reply before it)."""
        self.due = self.heard = now
        self.received = buffered

    def heard_bytes(self, count: int, now: float) -> None:
        self.heard = now
        self.received += count

    def deadline(self, timeout_s: float, block_s: float, min_rate: float) -> float:
        """When the awaited reply is overdue (module docstring)."""
        return min(self.heard, self.due + self.received / min_rate) + timeout_s + block_s

    def why(self, timeout_s: float, min_rate: float, now: float) -> str:
        """Why a reply that is overdue at ``now`` failed its node, for the failover's log."""
        if self.heard <= self.due + self.received / min_rate:
            return f"no reply within {timeout_s:g} s"
        return (f"reply incomplete after {now - self.due:.1f} s ({self.received} bytes, less "
                f"than {min_rate / 1024:g} KiB/s)")
