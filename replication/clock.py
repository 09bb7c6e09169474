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

Following is not exact. A follower starts from an entry when the entry reaches its log, a little
after the leader stamped it, so each leader change leaves the timeline behind by that delay
(about 0.3 ms on loopback, more under load). Left alone this adds up, change after change, until
the timeline is a second behind and gives way to the wall clock in one jump, which would end
every running TTR and delay up to a second early. So the leader also closes the gap between the
timeline and its own wall clock, slowly: its stamps run at most ``SLEW`` fast or slow (0.5 ms
per second, so a timer lasts its time to within 0.05 %, whichever nodes lead meanwhile).

The leader itself follows its timeline from the instant each stamp stands for
(``stamped_at_ns``), not from when the entry was written to its journal: from there the timeline
fell behind by the journal's write at every entry, 5 ms per second under load, and gave way to
the wall clock with a jump every few minutes.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("beanraft.raft")

CONTINUITY_NS = 1_000_000_000
SLEW = 0.0005  # the most the leader's stamps run fast or slow to close the gap to its clock


class ClusterClock:
    """This node's view of the cluster's time, and the leader's stamps."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns):
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._anchor: tuple[int, int] | None = None  # (stamp applied, monotonic ns then)
        self._last_stamp = 0
        self._away = False
        self.stamped_at_ns = 0  # the monotonic time the last stamp stands for (tick thread)

    def observe(self, stamp_ns: int, appended_at_ns: int | None = None) -> None:
        """An entry was applied; ``stamp_ns`` is the state machine's time after it.

        ``appended_at_ns`` is the monotonic time at which the entry reached this node's log,
        close to when the leader stamped it; an entry read back from the journal has none.
        """
        self._anchor = (stamp_ns, self._monotonic_ns() if appended_at_ns is None
                        else appended_at_ns)

    def now_ns(self) -> int:
        """The cluster's time now, as well as this node can tell."""
        return self._now(self._monotonic_ns())[0]

    def _now(self, monotonic: int) -> tuple[int, int, int]:
        """(the cluster's time, how far the followed timeline is from the wall clock, the
        monotonic time since the entry it is followed from), at ``monotonic``."""
        wall = self._wall_ns()
        if self._anchor is None:
            return wall, 0, 0
        stamp, seen_at = self._anchor
        since = monotonic - seen_at
        followed = stamp + since
        gap = followed - wall
        return (wall if abs(gap) > CONTINUITY_NS else followed), gap, since

    def stamp(self, not_before_ns: int = 0) -> int:
        """The time stamp of an entry the leader appends now: never earlier than the last one.

        Within ``CONTINUITY_NS`` of the wall clock the followed timeline moves towards it by at
        most ``SLEW`` of the time since the entry it is followed from; the leader applies its
        own entries, so the corrections add up at that rate and no faster."""
        self.stamped_at_ns = monotonic = self._monotonic_ns()
        now, gap, since = self._now(monotonic)
        away = abs(gap) > CONTINUITY_NS
        if away and not self._away:
            log.info("stamping entries with this node's clock: the cluster's timeline was "
                     "%.3f s away from it", gap / 1e9)
        self._away = away
        if not away:
            step = int(since * SLEW)
            now -= max(-step, min(step, gap))
        stamp = max(now, self._last_stamp, not_before_ns)
        self._last_stamp = stamp
        return stamp
