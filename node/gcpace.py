"""The server process's cycle collector: the young generations as CPython runs them, the oldest
paced by time.

CPython (3.11) collects its oldest generation whenever the objects that reached it since the last
full pass number a quarter of those already there. Every waiting job is such an object (one
``Job`` each), so a node whose queue grows, or turns over while it holds many jobs, walks all of
them again and again: with a million jobs one full pass held the event loop, and so every
client, for 0.57 s, and filling the queue spent 7 % of its time in full passes
(docs/reference/performance.md). The jobs do not need the cycle collector: the state machine
drops its own references (a job's holder, a session's reservations) as jobs move, so reference
counting frees them.

So the node's process (``beanraft serve``) keeps the young generations automatic, which is where
the cyclic garbage of the loop (futures, exceptions and their tracebacks) dies, and makes the
oldest one run from the node's own timer instead: at most once per ``FULL_EVERY_S``, and only
when CPython itself would have been due (``YOUNG_PASSES`` passes of the middle generation since
the last full one). Cyclic garbage that outlives the young generations is therefore freed within
about ``FULL_EVERY_S``, whatever the size of the queue.

One kind of such garbage grows with the clients, not with time: every asyncio socket transport
refers to itself (through the bound methods it keeps), so a connection that lived through a few
young passes leaves its transport and socket objects, about 0.5 kB, to the oldest generation when
it closes. Under connection churn that is a few MB per second; so a full pass also comes, when
due, after ``CLOSED_PER_PASS`` connections closed since the last one (at most once a
``CHECK_EVERY_S``), which bounds that garbage to about 5 MB. With a million jobs waiting a pass
costs about 0.6 s, 60 us per closed connection, far less than a connection costs the node.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("beanraft.gc")

FULL_EVERY_S = 60.0  # the longest time between two full passes that are due
CLOSED_PER_PASS = 10_000  # connections closed since the last full pass that make one due now
CHECK_EVERY_S = 1.0  # how often the node looks
YOUNG_PASSES = 10  # CPython's own third threshold: middle-generation passes per full pass
NEVER = 1 << 30  # a third threshold CPython never reaches: it makes no full pass by itself


def install() -> None:
    """Stop CPython's own full passes (the young generations stay as they are)."""
    young, middle, _oldest = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


def installed() -> bool:
    return gc.get_threshold()[2] >= NEVER


def due() -> bool:
    """Whether CPython itself would have made a full pass by now, had it been left to."""
    return gc.isenabled() and gc.get_count()[2] >= YOUNG_PASSES


def time_for_a_pass(since_s: float, closed: int) -> bool:
    """Whether to make a full pass now, ``since_s`` after the last one, with ``closed``
    connections closed since then."""
    return (since_s >= FULL_EVERY_S or closed >= CLOSED_PER_PASS) and due()


def collect() -> int:
    """One full pass now: the unreachable objects it found."""
    began = time.monotonic()
    found = gc.collect()
    log.debug("full cycle collection: %d unreachable objects, %.0f ms", found,
              (time.monotonic() - began) * 1000)
    return found
