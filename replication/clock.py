"""The cluster's time: stamped into entries by the leader, followed by every node between them.

The state machine reads time only from the entries it applies, so every replica fires a timer at
the same point of the log. Which time goes into an entry is decided here, on the leader, when it
appends the entry; the node that proposed it does not matter.

Every node follows the cluster's timeline between entries: the stamp of the last entry it applied
plus the time elapsed since then on its monotonic clock. A new leader continues that timeline
rather than its own wall clock, so a leader change neither brings timers forward nor holds them
back when clocks differ a little. A timeline that is more than ``CONTINUITY_NS`` away from this
node's wall clock (the whole cluster was down for a while, or this clock is wrong) gives way to
the wall clock, and time still never runs backwards in the log.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("beanraft.raft")

CONTINUITY_NS = 1_000_000_000


class ClusterClock:
    """This node's view of the cluster's time, and the leader's stamps."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns):
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._anchor: tuple[int, int] | None = None  # (stamp applied, monotonic ns then)
        self._last_stamp = 0
        self._away = False

    def observe(self, stamp_ns: int, appended_at_ns: int | None = None) -> None:
        """An entry was applied; ``stamp_ns`` is the state machine's time after it.

        ``appended_at_ns`` is the monotonic time at which the entry reached this node's log,
        close to when the leader stamped it; an entry read back from the journal has none.
        """
        self._anchor = (stamp_ns, self._monotonic_ns() if appended_at_ns is None
                        else appended_at_ns)

    def now_ns(self) -> int:
        """The cluster's time now, as well as this node can tell."""
        return self._now()[0]

    def _now(self) -> tuple[int, int]:
        """(the cluster's time, how far the followed timeline is from the wall clock)."""
        wall = self._wall_ns()
        if self._anchor is None:
            return wall, 0
        stamp, seen_at = self._anchor
        followed = stamp + (self._monotonic_ns() - seen_at)
        gap = followed - wall
        return (wall if abs(gap) > CONTINUITY_NS else followed), gap

    def stamp(self, not_before_ns: int = 0) -> int:
        """The time stamp of an entry the leader appends now: never earlier than the last one."""
        now, gap = self._now()
        away = abs(gap) > CONTINUITY_NS
        if away and not self._away:
            log.info("stamping entries with this node's clock: the cluster's timeline was "
                     "%.3f s away from it", gap / 1e9)
        self._away = away
        stamp = max(now, self._last_stamp, not_before_ns)
        self._last_stamp = stamp
        return stamp
