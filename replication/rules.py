"""The rules version every member can apply: when the cluster may switch its state machine's rules.

Theory of operation
-------------------
The state machine's rules have a version in the replicated state (``jobs/machine.py``, "Rules
versions"), which changes only at a RULES entry. Proposing one is safe once every member runs
code that applies it: a member of an earlier version would go on applying the old rules to the
entries that follow, and its state would part from the others'.

So each member tells the others, every ``TELL_EVERY_S`` (``TELL_EARLY_S`` while it has not
heard them all agree with it), the highest version it agrees to: the
highest its code applies, or less when the operator holds it back (``--max-rules``, to keep the
way back to an earlier BeanRaft open). A node of an earlier version sends nothing of the kind,
and that silence holds the whole cluster at the rules it has. ``agreed`` is the lowest version
this node and every current member told it within ``FRESH_S``; 1 while any member is silent.
On the leader a learner counts as a member (``membership.py``: a joining node the leader
replicates to before it proposes the addition): it applies every entry the members do, so a
RULES entry proposed while it catches up would reach it as well.
The node that leads proposes RULES(``agreed``) when that is above the state's version
(``node/app.py``); any member could, but the leader's proposal needs no forwarding.

A node is added as a member only once it has said it applies the version the state applies
(``refuses``, asked by ``member_change.py`` before it proposes an addition): a BeanRaft of an
earlier version catches up as a learner, but the addition times out with the reason.

The census is advice, not a lock: a member that is swapped for an older version after it told
its version would apply the entries that follow by the old rules. The rolling upgrade guide says not to downgrade past a
switch; a node whose code meets a RULES entry or a snapshot above what it applies exits
(``stop_for_newer_rules``, status ``EXIT_NEWER_RULES``) rather than apply what follows by rules
it does not know. Versions of BeanRaft before the rules version existed cannot notice: they
answer the RULES entry ERROR and go on, which is why nothing but the census may propose one.

Everything here runs on the tick thread, except ``agreed``, an int the loop reads.
"""

from __future__ import annotations

import logging
import os
import time

from beanraft.jobs.commands import MAX_RULES, RULES_SUPPORTED

from . import seam
from .forwarding import route_messages

log = logging.getLogger("beanraft.raft")

TELL = "br_rules"  # peer message: {"type": TELL, "rules": int}
TELL_EVERY_S = 1.0
TELL_EARLY_S = 0.25  # while a member has not been heard: a new cluster switches within a second
FRESH_S = 5.0  # a member's word counts this long


EXIT_NEWER_RULES = 65  # the data say: run a newer BeanRaft


def stop_for_newer_rules(what: str) -> None:
    """Exit at once: ``what`` follows rules this code cannot apply. Nothing after it is applied
    or written, so the node starts again where it stopped once a newer BeanRaft runs it."""
    log.critical("%s, above %d, the highest this BeanRaft applies: this node stops; run the "
                 "version the other members run", what, RULES_SUPPORTED)
    os._exit(EXIT_NEWER_RULES)


class RulesCensus:
    """What each member agrees to, and the lowest of them (see the module docstring)."""

    def __init__(self, sync, own: int = RULES_SUPPORTED) -> None:
        if not 1 <= own <= RULES_SUPPORTED:
            raise ValueError(f"rules version {own} is not one of 1..{RULES_SUPPORTED}")
        self._sync = sync
        self.own = own
        self._heard: dict[str, tuple[int, float]] = {}  # member -> (its version, when told)
        self._told_at = -TELL_EVERY_S
        # Alone (no member, no learner) it agrees with itself; else it waits for their word.
        self.agreed = own if not (set(sync.otherNodes) | set(sync.readonlyNodes)) else 1
        self.members: dict[str, int | None] = {}  # each other member's fresh word, or None

    def install(self) -> None:
        route_messages(self._sync, frozenset({TELL}), self._on_message)
        self._sync.addOnTickCallback(self.on_tick)

    def _on_message(self, node, message: dict) -> None:
        rules = message.get("rules")
        if type(rules) is int and 1 <= rules <= MAX_RULES:
            self._heard[str(node)] = (rules, time.monotonic())

    def on_tick(self) -> None:
        if not (self._sync.otherNodes or self._sync.readonlyNodes or self._heard or self.members):
            # Alone, with nobody to tell or hear from: it agrees with itself. A lone node ticks
            # after every commit, so this is on the path of each of its batches.
            self.agreed = self.own
            return
        now = time.monotonic()
        # A learner is not in otherNodes but receives the log all the same (module docstring).
        others = sorted(str(node) for node in self._sync.otherNodes | self._sync.readonlyNodes)
        every = TELL_EVERY_S if self.agreed == self.own else TELL_EARLY_S
        if now - self._told_at >= every:
            self._told_at = now
            transport = seam.transport(self._sync)
            for node in self._sync.otherNodes:
                transport.send(node, {"type": TELL, "rules": self.own})
        members: dict[str, int | None] = {}
        for address in others:
            rules, at = self._heard.get(address, (1, -FRESH_S))
            members[address] = rules if now - at <= FRESH_S else None
        for address in [a for a in self._heard if a not in members]:
            del self._heard[address]  # no longer a member
        # Both replaced whole, never changed in place: the loop reads them between ticks.
        self.members = members
        self.agreed = min([self.own, *(rules or 1 for rules in members.values())])

    def refuses(self, address: str, applied: int) -> str | None:
        """Why ``address`` may not become a member of a cluster whose state applies rules
        version ``applied``, or None (tick thread)."""
        told = self.members.get(address)
        if applied <= 1 or (told is not None and told >= applied):
            return None
        said = "has said nothing" if told is None else f"says {told}"
        return (f"it {said} of the rules version it applies, and the cluster applies version "
                f"{applied}: it runs an earlier BeanRaft, or --max-rules below {applied}; "
                "upgrade it (or drop the flag) and ask again")
