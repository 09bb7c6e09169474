"""A backed-up state made ready to seed a new cluster.

A backup is the state of the old cluster at one log index. The new cluster starts it again with
no connections and at another time, so ``for_new_cluster``:

* ends every session, as if every client had disconnected: each reserved job goes back to ready
  with its priority, TTR and counters (a disconnect does not count as a timeout or a release),
  blocked reserves end, session tokens are forgotten, and every node's epoch is retired (the new
  nodes register epochs of their own);
* moves every time in the state by the same amount, so that the state's clock reads ``now_ns``:
  a delayed job keeps the delay it had left, a paused tube the pause it had left, a job its age,
  and a put key the rest of its window.

The put-key table is kept: a producer that retries a put acknowledged before the backup gets the
same job id, not a second job.
"""

from __future__ import annotations

import msgpack

from . import snapshot
from .machine import Machine

_JOB_CREATED, _JOB_DEADLINE = 7, 8  # fields of a job record (snapshot.py)
_TUBE_PAUSE, _TUBE_UNPAUSE_AT = 4, 5  # fields of a tube record
_NOW, _TUBES, _JOBS, _DEDUP, _DETACHED = 1, 7, 10, 11, 12  # fields of the snapshot body


def for_new_cluster(data: bytes, now_ns: int) -> tuple[bytes, dict]:
    """The snapshot ``data`` with no sessions, its clock moved to ``now_ns``; and a summary.

    ValueError if ``data`` is not a snapshot.
    """
    machine = Machine.restore(data)
    summary = {"jobs": len(machine.jobs), "reserved_released": machine.reserved_ct,
               "sessions_ended": len(machine.sessions), "put_keys": len(machine.dedup)}
    machine.retire_all()
    try:
        shifted = _shift(machine.snapshot(), now_ns - machine.now_ns)
    except OverflowError:  # a time that no clock reaches, moved past what the codec holds
        raise ValueError("a time in the state cannot be moved to the restore's clock") from None
    restored = Machine.restore(shifted)  # the result must read back, or it is never written
    summary.update(ready=restored.ready_ct, delayed=restored.delayed_ct,
                   buried=restored.buried_ct, tubes=len(restored.tube_list),
                   paused_tubes=sum(1 for tube in restored.tube_list if tube.pause_ns))
    return shifted, summary


# The snapshot layouts the field numbers above describe: version 4 adds the rules version and
# the sessions' reservation order after them, version 5 the timers' orders, which hold no time.
_SHIFTED_VERSIONS = (3, 4, 5)


def _shift(data: bytes, delta_ns: int) -> bytes:
    """``data`` (no sessions) with every absolute time moved by ``delta_ns``."""
    # A new snapshot layout must teach this function its fields: fail loudly until it does.
    assert snapshot.VERSION in _SHIFTED_VERSIONS and data[0] in _SHIFTED_VERSIONS, \
        "snapshot layout changed"
    body = msgpack.unpackb(data[1:], raw=False, use_list=True)
    body[_NOW] += delta_ns
    for tube in body[_TUBES]:
        if tube[_TUBE_PAUSE]:
            tube[_TUBE_UNPAUSE_AT] += delta_ns
    for job in body[_JOBS]:
        job[_JOB_CREATED] += delta_ns
        if job[_JOB_DEADLINE]:
            job[_JOB_DEADLINE] += delta_ns
    for record in body[_DEDUP]:
        record[2] += delta_ns
    for record in body[_DETACHED]:  # none after retire_all; shifted like any time if there were
        record[1] += delta_ns
    return data[:1] + msgpack.packb(body, use_bin_type=True)
