"""A Jepsen/Maelstrom-style history: every operation as an ``invoke`` and a completion.

An event is a dict::

    {"index": 12, "type": "invoke" | "ok" | "fail" | "info", "process": "node2-w1",
     "node": "node2", "conn": 31, "f": "reserve", "value": {...}, "time": 1796...123}

* ``ok``: a definite reply that says the operation happened (INSERTED, RESERVED, DELETED, ...).
* ``fail``: a definite reply that says it did not (NOT_FOUND, OUT_OF_MEMORY, TIMED_OUT, ...).
* ``info``: no definite reply (timeout, connection closed): it may or may not have happened.
  A history never turns an ``info`` into a ``fail``.

Each process has at most one operation in flight, so a completion belongs to the latest invoke
of its process. ``time`` is wall-clock seconds (``time.time()``), the same clock the nodes stamp
into Raft entries, which is what lets the checker bound TTR expiries. The nemesis, the status
sampler and the final drain write their events here too (processes ``nemesis``, ``sampler``,
``drain``). Bodies are ASCII text, so an event is plain JSON.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class History:
    """A thread-safe, append-only list of events."""

    def __init__(self):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._open: dict[str, dict] = {}

    def invoke(self, process: str, f: str, value: dict | None = None, node: str | None = None,
               conn: int | None = None) -> dict:
        """Record the start of an operation; returns its invoke event."""
        with self._lock:
            assert process not in self._open, f"{process} already has an operation in flight"
            event = {"index": len(self.events), "type": "invoke", "process": process,
                     "node": node, "conn": conn, "f": f, "value": value or {}, "time": time.time()}
            self.events.append(event)
            self._open[process] = event
            return event

    def complete(self, process: str, type_: str, value: dict | None = None) -> dict:
        """Record the completion (ok/fail/info) of ``process``'s operation in flight."""
        assert type_ in ("ok", "fail", "info"), type_
        with self._lock:
            start = self._open.pop(process)
            event = {"index": len(self.events), "type": type_, "process": process,
                     "node": start["node"], "conn": start["conn"], "f": start["f"],
                     "value": value or {}, "time": time.time()}
            self.events.append(event)
            return event

    def note(self, process: str, f: str, value: dict | None = None, node: str | None = None,
             type_: str = "ok", at: float | None = None) -> None:
        """An instantaneous event (invoke and completion at once), e.g. a status sample;
        ``at`` backdates it (e.g. to a time read from a node's log)."""
        self.invoke(process, f, value, node)
        self.complete(process, type_, value)
        if at is not None:
            with self._lock:
                self.events[-1]["time"] = self.events[-2]["time"] = at

    def save(self, path: Path) -> None:
        with self._lock, open(path, "w") as out:
            for event in self.events:
                out.write(json.dumps(event, sort_keys=True) + "\n")


def load(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
