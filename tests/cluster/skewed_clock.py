"""Runs ``beanraft`` with its wall clock shifted: ``python skewed_clock.py SECONDS serve …``.

A fault injector for tests of the cluster's time. ``time.time`` and ``time.time_ns`` of the node
process read SECONDS (may be negative) ahead of the machine's clock before anything of BeanRaft
is imported; the monotonic clock is left alone, as a real clock error leaves it. (libfaketime does
this at the C level, but it also shifts the deadlines of CPython's own timed waits, so the GIL is
handed over hundreds of milliseconds late and a three-node cluster takes tens of seconds to elect
a leader.)
"""

from __future__ import annotations

import sys
import time


def shift_wall_clock(seconds: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = round(seconds * 1e9)
    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + offset_ns


if __name__ == "__main__":
    shift_wall_clock(float(sys.argv[1]))
    from beanraft.node.cli import main

    sys.argv = ["beanraft", *sys.argv[2:]]
    main()
