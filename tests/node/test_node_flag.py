"""Goal: ``node.flag.Flag`` behaves as asyncio.Event for the connection's waits (set before or
after the wait, clear, several waiters, a waiter cancelled) and waits without asking the kernel
for the process id, as asyncio.Event does on CPython 3.11 at every wait.

Method: the behaviours on a real loop; the system calls of 20,000 waits counted by strace(1)
around a child process, against the same waits on asyncio.Event.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from beanraft.node.flag import Flag


def test_a_wait_on_a_set_flag_returns_at_once_and_a_wait_on_a_clear_one_until_it_is_set():
    async def scenario():
        flag = Flag()
        assert not flag.is_set()
        flag.set()
        assert flag.is_set()
        assert await asyncio.wait_for(flag.wait(), 1) is True
        flag.clear()
        assert not flag.is_set()
        waiter = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done(), "a clear flag let its waiter go"
        flag.set()
        assert await asyncio.wait_for(waiter, 1) is True

    asyncio.run(scenario())


def test_set_wakes_every_waiter_and_a_cancelled_waiter_leaves_the_others_waiting():
    async def scenario():
        flag = Flag()
        waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[1].cancel()
        await asyncio.sleep(0)
        assert waiters[1].cancelled()
        assert not waiters[0].done() and not waiters[2].done()
        flag.set()
        assert await asyncio.wait_for(asyncio.gather(waiters[0], waiters[2]), 1) == [True, True]
        assert not flag._waiters, "a waiter stayed registered after it returned"

    asyncio.run(scenario())


def test_a_flag_set_and_cleared_before_its_waiter_runs_still_wakes_it():
    """As asyncio.Event: set wakes the waiters there are; a clear after it does not undo that."""

    async def scenario():
        flag = Flag()
        waiter = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0)
        flag.set()
        flag.clear()
        assert await asyncio.wait_for(waiter, 1) is True

    asyncio.run(scenario())


_WAITS = textwrap.dedent("""
    import asyncio, sys
    from beanraft.node.flag import Flag

    async def main():
        flag = Flag() if sys.argv[1] == "flag" else asyncio.Event()
        loop = asyncio.get_running_loop()
        for _ in range(20000):
            flag.clear()
            loop.call_soon(flag.set)
            await flag.wait()

    asyncio.run(main())
""")


def _getpid_calls(kind: str) -> int:
    strace = shutil.which("strace")
    out = subprocess.run([strace, "-f", "-c", "-e", "trace=getpid", sys.executable, "-c", _WAITS,
                          kind], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    match = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?getpid$", out.stderr, re.M)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt install strace)")
def test_waiting_on_a_flag_asks_the_kernel_for_no_process_id():
    event_calls = _getpid_calls("event")
    flag_calls = _getpid_calls("flag")
    # asyncio.Event asks at each of its 20,000 waits on CPython 3.11; later Pythons do not ask
    # at all, and then both counts are small, which still shows the flag asks for nothing.
    assert flag_calls < 100, f"{flag_calls} getpid calls for 20,000 waits on a Flag"
    if sys.version_info < (3, 12):
        assert event_calls >= 20000, f"asyncio.Event made {event_calls} getpid calls: the " \
                                     "reason for Flag is gone, or the count is wrong"
