"""A Raft tick that fails over and over (a descriptor shortage, say) is logged once per burst, not
once per tick, and ticking carries on; ticks that fail and succeed in turn log one burst a minute.

Method: a real single RaftNode, ticking on its event loop, whose pysyncobj ``doTick`` raises for
a while (about 15 ticks) and then works again; the log records of its ticks are counted.
"""

from __future__ import annotations

import asyncio
import logging

from polling import until
from upstream import free_port

from beanraft.replication.raft import RaftConfig, RaftNode


def test_a_burst_of_failed_ticks_logs_one_traceback_and_one_recovery(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.raft")
    loop = asyncio.new_event_loop()
    node = RaftNode(RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=str(tmp_path)),
                    loop, on_events=lambda events: None)
    real_tick = node._sync.doTick
    calls = {"failed": 0}

    def failing_tick(wait):
        calls["failed"] += 1
        raise OSError(24, "Too many open files")

    node._sync.doTick = failing_tick

    async def fail_then_recover():
        # A lone node ticks on this loop (raft.py): run it while the ticks fail, then heal them.
        node.start()
        await until(lambda: f"15 failed ticks, not {calls['failed']}",
                    lambda: calls["failed"] >= 15, 10, step_s=0.02)
        node._sync.doTick = real_tick
        await asyncio.sleep(0.3)

    try:
        loop.run_until_complete(fail_then_recover())
    finally:
        node.stop()
        loop.close()
    assert calls["failed"] >= 15
    messages = [r.getMessage() for r in caplog.records if "tick" in r.getMessage()]
    assert messages == ["raft tick failed (logged once until one succeeds, and at most once "
                        "every 60 s)",
                        f"raft ticks succeed again after {calls['failed']} failed"], messages


def test_ticks_that_fail_and_succeed_in_turn_log_one_traceback_a_minute(tmp_path, caplog):
    # A follower whose journal cannot write fails a tick, succeeds at the next (nothing to
    # write), fails again: one burst per tick, which logged ten tracebacks a second.
    caplog.set_level(logging.INFO, logger="beanraft.raft")
    loop = asyncio.new_event_loop()
    node = RaftNode(RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=str(tmp_path)),
                    loop, on_events=lambda events: None)
    real_tick = node._sync.doTick
    calls = {"ticks": 0, "failed": 0}

    def every_other_tick_fails(wait):
        calls["ticks"] += 1
        if calls["ticks"] % 2:
            calls["failed"] += 1
            raise OSError(28, "No space left on device")
        return real_tick(wait)

    node._sync.doTick = every_other_tick_fails

    async def alternate():
        node.start()
        await until(lambda: f"20 failed ticks, not {calls['failed']}",
                    lambda: calls["failed"] >= 20, 10, step_s=0.02)
        node._sync.doTick = real_tick
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(alternate())
    finally:
        node.stop()
        loop.close()
    messages = [r.getMessage() for r in caplog.records if "tick" in r.getMessage()]
    assert messages == ["raft tick failed (logged once until one succeeds, and at most once "
                        "every 60 s)", "raft ticks succeed again after 1 failed"], messages
