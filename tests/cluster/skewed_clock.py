"""Runs ``beanraft`` with its wall clock shifted: ``python skewed_clock.py SECONDS serve …``.

A fault injector for tests of the cluster's time. ``time.time`` and ``time.time_ns`` of the node
process read SECONDS (may be negative) ahead of the machine's clock before anything of BeanRaft
is imported; the monotonic clock is left alone, as a real clock error leaves it. (libfaketime
0.9.10 does this at the C level but does not suit CPython: with FAKETIME_DONT_FAKE_MONOTONIC=1
``time.sleep`` fails with EINVAL and a three-node cluster took up to 30 s to elect a leader, its
threads starved; without it, lock and Event timeouts never return.)
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
