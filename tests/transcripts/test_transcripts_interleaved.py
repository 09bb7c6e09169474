"""Interleaved differential fuzzing: several clients at once -- a worker blocked in `reserve` on
one connection while another puts, releases, kicks or pauses, clients that quit or hang up while
waiting, bodies of the size `-z` allows and one byte more, delays, TTRs, pauses and reserve
timeouts that expire -- must leave every connection with the bytes beanstalkd 1.12 sends it.

Method: the reference and the target run side by side with the same three connections each,
and get the same seeded stream of valid commands, one command at a time on one connection,
sometimes sent in pieces cut at random bytes. After each command both sides settle and every
connection's replies so far must be equal, byte for byte, except clock and process values
(transcripts/interleaving.py says how a side settles, and why beanstalkd's idle connections are
poked). The stream never lets two reserves wait for the same tube at once (which waiter 1.12
serves follows its rotating order, a documented difference) and never pipelines (two commands in
one packet share one time in BeanRaft's log; test_transcripts_timers.py pins what 1.12 does with
the timers they set, which rules version 3 matches).

A failure prints the seed and the last steps; ``BEANRAFT_INTERLEAVED_SEEDS=<seed>`` (the
untimed stream) or ``BEANRAFT_TIMED_SEEDS=<seed>`` replays it, and ``random`` draws a new seed.
"""

import os
import random
import time

import pytest

from transcripts.interleaving import Run

STEPS = 120  # commands of the untimed stream
EPISODES = 2  # of the timed stream: command windows, then no command until every timer fired
WINDOWS = (0.0, 1.5)  # where an episode's command windows start, seconds after its start
WINDOW_S = 0.3
STEPS_PER_WINDOW = 7
SPACING_S = 0.02  # at least this long between two commands of a window


def seeds(variable: str, default: str) -> list[int]:
    text = os.environ.get(variable, default)
    return [random.SystemRandom().randrange(2**32) if s == "random" else int(s) for s in text.split(",")]


@pytest.mark.parametrize("seed", seeds("BEANRAFT_INTERLEAVED_SEEDS", "1,11"))
def test_every_connection_gets_the_bytes_of_the_reference_in_an_interleaved_stream(
        start_server, target_kind, seed):
    # Every delay, TTR, pause and timeout is an hour: no timer fires during the run.
    run = Run(start_server, target_kind, seed, timed=False, replay="BEANRAFT_INTERLEAVED_SEEDS")
    try:
        for _ in range(STEPS):
            run.step()
    finally:
        run.close()


@pytest.mark.parametrize("seed", seeds("BEANRAFT_TIMED_SEEDS", "7"))
def test_timers_expire_alike_in_an_interleaved_stream(start_server, target_kind, seed):
    # Delays, TTRs, pauses and reserve timeouts of 1 to 3 s. A timer ends a whole number of
    # seconds after the command that set it (or after the expiry that handed a waiter its
    # job), so two expiries can only meet, and the two servers order them by their own few
    # milliseconds of delay, if two commands were a whole number of seconds apart. The
    # windows make sure none are: commands in [0, 0.3] and [1.5, 1.8] s of an episode, at
    # least SPACING_S apart; the first window's timers end at [n, n + 0.3] s, the second's at
    # [n + 0.5, n + 0.8] s. The second window thus sees the first one's one-second timers
    # expired and none of its own. An episode ends once the reference has no timer left.
    run = Run(start_server, target_kind, seed, timed=True, replay="BEANRAFT_TIMED_SEEDS")
    try:
        for _ in range(EPISODES):
            origin = time.monotonic()
            for start in WINDOWS:
                run.idle_until(origin + start)
                for _ in range(STEPS_PER_WINDOW):
                    if time.monotonic() > origin + start + WINDOW_S:
                        run.history.append("(window over: its other steps are skipped)")
                        break
                    run.step()
                    run.idle_until(time.monotonic() + SPACING_S)
            run.wait_quiet()
    finally:
        run.close()
