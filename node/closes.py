"""Session closes whose outcome was unknown, proposed again until they commit.

Theory of operation. A connection's end commits its session's CLOSE, which releases the jobs it
holds and ends a reserve it left waiting. Without a leader (an election, a node cut off in a
minority) that CLOSE ends as unknown; left at that, the session would stay open in the
replicated state for good, and a reserve it left waiting would take (and hide until its TTR) a
job from other workers. So the CLOSE is kept here and proposed again, unchanged: a repeat of a
CLOSE that did commit is answered from the reply cache or GONE, never applied twice.

* One task per node retries every kept CLOSE together (group commit puts them in shared
  entries), after ``RETRY_S[0]`` and then at doubling pauses up to ``RETRY_S[1]``, until none is
  left. Clients that reconnect in a loop during an outage cost one entry each here, not a task.
* At most ``MAX_KEPT`` are kept; a CLOSE beyond that is dropped, with one warning per outage. Its
  session then ends when the cluster declares this node dead (``--node-grace``) or when the node
  starts again (REGISTER closes the sessions of its previous incarnation).
* Once this node's journal has failed nothing it proposes commits again: the kept closes are
  dropped and none is kept from then on (the restart closes those sessions).
"""

from __future__ import annotations

import asyncio
import logging

from beanraft.replication.batcher import OutcomeUnknown

log = logging.getLogger("beanraft.connection")

RETRY_S = (0.5, 30.0)  # first and longest pause between two proposals of the kept closes
MAX_KEPT = 65_536  # CLOSE commands kept at once (about 200 bytes each)


class LingeringCloses:
    """The CLOSE commands of one node still to commit, and the task that proposes them."""

    def __init__(self, node):
        self.node = node
        self.kept: dict[int, tuple] = {}  # sid -> its CLOSE command
        self.task: asyncio.Task | None = None
        self._warned = False

    def keep(self, close: tuple) -> None:
        """Propose ``close`` (``(Op.CLOSE, sid, seq)``) again until it commits."""
        if self.node.raft.journal_failed() or getattr(self.node, "_closing", False):
            return  # nothing commits again, or the node is stopping: its next start closes them
        if len(self.kept) >= MAX_KEPT and close[1] not in self.kept:
            if not self._warned:
                self._warned = True
                log.warning("%d session closes wait for a leader already: further ones are "
                            "dropped (those sessions end when this node is declared dead or "
                            "restarts)", len(self.kept))
            return
        self.kept[close[1]] = close
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = RETRY_S[0]
        while self.kept:
            await asyncio.sleep(delay)
            if self.node.raft.journal_failed():
                self.kept.clear()
                return
            batch = list(self.kept.values())
            outcomes = await asyncio.gather(*(self.node.commit.submit(c) for c in batch),
                                            return_exceptions=True)
            for close, outcome in zip(batch, outcomes):
                if isinstance(outcome, OutcomeUnknown):
                    continue
                if isinstance(outcome, BaseException):
                    log.error("closing session %x failed: %r", close[1], outcome)
                if self.kept.get(close[1]) is close:
                    del self.kept[close[1]]
            delay = min(delay * 2, RETRY_S[1])
        self._warned = False
