"""One failover episode: which address to try next, how long to wait, and what was tried.

An episode starts when a connection is lost (or with the first connection) and ends when a node
answers. Addresses are tried in rounds: each round is every address in random order, those that
failed least in this episode first (a frozen node accepts connections and costs a whole timeout
at every try). Between rounds the client waits 50 ms, doubling up to 1 s, each pause multiplied
by a random factor in 0.5-1.5 so that many clients do not come back in step. The budget
(``failover_timeout``) is enforced by the core, which knows the time.
"""

from __future__ import annotations

import random

from .addresses import Address, describe

BACKOFF_FIRST_S = 0.05  # the pause after the first round of addresses
BACKOFF_MAX_S = 1.0  # the longest pause between rounds


class Episode:
    """When the failover began, what was tried, and the order of the current round."""

    def __init__(self, now: float):
        self.started = now
        self.tried: dict[str, tuple[int, str]] = {}  # address -> (attempts, last reason)
        self.round: list[Address] = []
        self.rounds = 0

    def next_attempt(self, addresses: list[Address], rng: random.Random) -> tuple[Address, float]:
        """The next address and the pause before trying it."""
        delay = 0.0
        if not self.round:
            if self.rounds:
                backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.rounds - 1))
                delay = backoff * rng.uniform(0.5, 1.5)
            self.rounds += 1
            order = addresses[:]
            rng.shuffle(order)
            order.sort(key=self.failures)  # stable: random among equals
            self.round = order
        return self.round.pop(0), delay

    def failures(self, address: Address) -> int:
        return self.tried.get(describe(address), (0, ""))[0]

    def note(self, address: Address, reason: str) -> None:
        count, _ = self.tried.get(describe(address), (0, ""))
        self.tried[describe(address)] = (count + 1, reason)

    def summary(self) -> str:
        if not self.tried:
            return "nothing could be tried"
        return "; ".join(f"{addr}: {reason} ({count}x)"
                         for addr, (count, reason) in self.tried.items())
