"""A member asked to remove itself answers success only once it knows the removal committed.

Theory of operation.
* pysyncobj's leader cuts a member off as it appends the member's removal, so the removed node
  never sees that entry, nor anything the leader sends it afterwards on an ordinary path. The
  leader keeps that one connection open (deaf) for ``seam.LINGER_S`` after the append; the
  notice that the node is removed leaves on it first (``standing.py``), and the answer to the
  node's own request leaves on it once the removal has committed (``Members._send``), as the
  answer to any change does.
* A success from the leader says ``committed``. Nothing else is taken for one: a leader of an
  earlier version of BeanRaft answered a member's own removal *before* proposing it, without
  ``committed``, and a leader that lost its role in that moment never proposed it. After such an
  answer this node waits (within the request's timeout) for the leader's notice that it is
  removed; the notice says the removal is in the leader's log, not that it committed, so the
  answer is still that the outcome is unknown, and says whether the notice came.
* A refusal made before the removal was proposed (``busy``, ``no_majority``, ``not_member``,
  ``no_leader`` from a node not leading, ``denied`` by pysyncobj) is passed on: nothing
  happened. Every other end is ``timeout`` with the outcome unknown, never a definite failure:
  no answer in time (the leader died, or the commit took longer than the connection lingers),
  the leader's own timeout, or a leader that lost its role after proposing it. The removal may
  or may not have committed, and this node cannot tell: the members stop talking to it as the
  leader appends the removal. So the message says how to check on another member.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from . import standing
from .forwarding import TIMEOUT
from .members_file import MembershipError

POLL_S = 0.05  # how often this node looks whether the leader told it it is removed


async def remove_self(ask: Callable[[], Awaitable], state: standing.Standing, address: str,
                      timeout_s: float):
    """The outcome of ``ask()``, the request to remove this node (``address``): its result once
    the leader says the removal committed, a refusal made before it was proposed, or else
    MembershipError ``timeout`` saying the outcome is unknown."""
    deadline = time.monotonic() + timeout_s
    told_before = state.told  # read on the loop, counted in the tick thread: only ever grows
    try:
        done = await ask()
    except MembershipError as exc:
        if exc.code != TIMEOUT:
            raise
        raise _unknown(address, str(exc), state, told_before) from None
    if getattr(done, "committed", False):
        return done
    # Answered before it was proposed: only the notice can still say it reached the log.
    while state.told == told_before and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
    raise _unknown(address, "the leader answered before proposing the removal (it runs an "
                   "earlier version of BeanRaft), so its answer does not say it committed", state,
                   told_before)


def _unknown(address: str, why: str, state: standing.Standing,
             told_before: int) -> MembershipError:
    if state.told == told_before:
        seen = "; no leader told this node it is removed"
    elif state.state == standing.REMOVED:
        seen = "; the leader told this node it is removed, so the removal is in that leader's log"
    else:
        seen = ("; the leader told this node it is removed (the removal was in that leader's "
                "log), and a leader of a newer term has replicated to it as a member since")
    return MembershipError(TIMEOUT, (
        f"the outcome is unknown: {why}. The removal of {address} may or may not have committed"
        + seen + ", and this node cannot tell more: the members stop talking to it as the leader "
        f"appends its removal. Check on another member: once 'beanraft member list --http "
        f"<its HTTP address>' shows a leader and no pending change, it no longer names {address}"
        " if the removal committed; if it still does, ask again"))
