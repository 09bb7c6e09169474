"""One log line per burst of failures, and not one per burst when bursts keep coming.

A tick that fails (a full disk under a follower's journal, say) usually fails again at the next
tick: the first failure of a burst is logged with its traceback and the end of the burst with a
count. But some failures alternate with successes, tick after tick (the journal refuses a write,
the next tick has nothing to write and succeeds), and one traceback per burst was then ten
ERROR lines a second. So a burst is logged only if the last logged one began ``every_s`` ago or
more; the bursts in between are counted, and the next logged one says how many there were.
"""

from __future__ import annotations

import logging

EVERY_S = 60.0


class BurstLog:
    """Call ``failed(now)`` on each failure (in an ``except`` block), ``succeeded()`` on each
    success; both log through ``log`` as the module docstring says."""

    def __init__(self, log: logging.Logger, failed: str, recovered: str,
                 every_s: float = EVERY_S) -> None:
        self._log = log
        self._failed, self._recovered = failed, recovered
        self._every_s = every_s
        self.failing = 0  # failures in a row, in the burst now
        self._logged_at: float | None = None  # when the last logged burst began
        self._logging = False  # the burst now was logged: its end is logged too
        self._quiet = 0  # bursts not logged since the last logged one

    def failed(self, now: float) -> None:
        self.failing += 1
        if self.failing > 1:
            return
        if self._logged_at is not None and now - self._logged_at < self._every_s:
            self._quiet += 1
            self._logging = False
            return
        quiet, self._quiet = self._quiet, 0
        self._logged_at, self._logging = now, True
        since = f"; {quiet} burst(s) of failures since the last one logged" if quiet else ""
        self._log.exception("%s (logged once until one succeeds, and at most once every %g s%s)",
                            self._failed, self._every_s, since)

    def succeeded(self) -> None:
        if self.failing and self._logging:
            self._log.info("%s after %d failed", self._recovered, self.failing)
        self.failing = 0
