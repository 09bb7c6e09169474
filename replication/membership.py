"""Membership at runtime: add or remove one member at a time, and remember who the members are.

Theory of operation.
* pysyncobj (``dynamicMembershipChange=True``) writes a change as a MEMBERSHIP log entry that
  takes effect on each node when the node appends it (Raft's single-server change). Any majority
  of the old members and any majority of the new ones share a node when the two sets differ by one
  member, so two leaders can never be elected in one term by the two configurations; that is
  why a leader runs **one change at a time** and refuses a second while the first is pending.
* A change is asked on any node and runs on the leader: a follower sends it over the sealed peer
  connection (``br_member_req``), the leader answers ``br_member_done``, by the path leadership
  transfers take too (``forwarding.py``). Everything that touches pysyncobj runs in the tick
  thread.
* The leader appends only the changes it runs itself. pysyncobj forwards every command queued on
  a node that is not the leader to the leader it knows of, a membership change too: a leader
  deposed after proposing a change, before its next tick appended it, would hand the change to
  the next leader, which would append it past every check below, while a change of its own may
  be uncommitted. So a membership change that arrives forwarded (``apply_command``) is refused
  (``refuse_forwarded_changes``); the node that proposed it answers its asker by itself, as a
  leader that lost its role. pysyncobj's leader appends no change before the first entry of its
  term is committed; that check covers every change, ours included.
* The change itself, from the leader's checks to its outcome, and what followers are told of it
  and show, is ``member_change.py``'s: the learner phase of an addition, what a leader that
  loses its role answers, and how a follower elected meanwhile takes an addition over.
* This node's own standing (joining, member, removed) is ``standing.py``'s. A member that asks
  for its own removal is answered over the connection the leader keeps open a moment after
  cutting it off, once the removal committed; how it tells that answer from an earlier
  version's, and what it answers otherwise, is ``own_removal.py``'s.
* The members are persisted in ``members.json`` in the data directory (``members_file.py``),
  written (atomically, after the journal is synced) whenever this node's view of the membership
  changes. At start it
  overrides ``--peer``, which only seeds a brand-new cluster, and it overrides the member list of
  the snapshot the node loads at start (pysyncobj issue #133: a stale snapshot would otherwise
  give the node an old view until the log is replayed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import own_removal, seam, standing, transfer
from .forwarding import Forwarder, route_messages
from .member_change import (ADD, ADDING, ALREADY_MEMBER, BUSY, CATCH_UP_ENTRIES, CHECK, DENIED,
                            LEARNING, NO_LEADER, NO_MAJORITY, NO_SECRET, NOT_MEMBER, PENDING,
                            REMOVE, REMOVING, TIMEOUT, Changed, Changes, members_now)
from .members_file import (MEMBERS_NAME, MembershipError, load_members, save_members,
                           start_peers, was_removed)

# member_change.py's names are taken from here by node/ and the tests, as before it was split off.
__all__ = ["MEMBERS_NAME", "MembershipError", "load_members", "save_members", "start_peers",
           "was_removed", "Changed", "Members", "change_membership", "refuse_forwarded_changes",
           "ADD", "REMOVE", "CHECK",
           "LEARNING", "ADDING", "REMOVING", "NO_LEADER", "BUSY", "ALREADY_MEMBER", "NOT_MEMBER",
           "NO_MAJORITY", "NO_SECRET", "DENIED", "TIMEOUT", "TRANSFER_FAILED", "NOT_RUNNING",
           "CATCH_UP_ENTRIES", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger("beanraft.membership")

REQUEST, DONE = "br_member_req", "br_member_done"
OWN_TYPES = frozenset((PENDING, standing.REMOVED_MESSAGE))  # not the forwarder's
DEFAULT_TIMEOUT_S = 30.0
# Why a change did not happen, beside member_change.py's codes (docs/reference/http.md).
TRANSFER_FAILED = "transfer_failed"
NOT_RUNNING = "not_running"
REACH_TIMEOUT_S = 3.0
FORWARDED, FORWARDED_DONE = "apply_command", "apply_command_response"  # pysyncobj's messages


# -- the event loop's entry point ------------------------------------------------------------


async def change_membership(raft, action: str, address: str, force: bool = False,
                            timeout_s: float = DEFAULT_TIMEOUT_S) -> Changed:
    """Add or remove ``address`` (a Raft HOST:PORT); ask on any node.

    Removing the leader first hands the leadership to another member (``transfer.py``).
    """
    if action == ADD and not force:
        await _check_listening(address)
    if action == REMOVE and raft.status.leader == address:
        # Refused now if it would be refused after the handover (busy, no majority left).
        await raft.members.request(CHECK, address, force, timeout_s)
        try:
            moved = await transfer.transfer_leadership(raft, None, min(timeout_s, 10.0))
        except transfer.TransferError as exc:
            raise MembershipError(TRANSFER_FAILED, f"{address} leads the cluster and the "
                                  f"leadership could not be handed over first: {exc}") from None
        log.info("leadership moved from %s to %s before its removal", address, moved.leader)
        # The node we ask learns the new leader in a heartbeat or two.
        deadline = time.monotonic() + timeout_s
        while raft.status.leader in (None, address) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return await raft.members.request(action, address, force, timeout_s)


async def _check_listening(address: str) -> None:
    """Refuse to add a node whose Raft port does not answer: with it counted and silent, a
    cluster of one or two would lose its majority."""
    host, _, port = address.rpartition(":")
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                 REACH_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise MembershipError(NOT_RUNNING, f"{address} does not answer ({exc or 'timeout'}): start "
                              "it first with 'beanraft serve --join' (or force it)") from None
    writer.close()


# -- the tick thread's side ------------------------------------------------------------------


def refuse_forwarded_changes(sync) -> None:
    """Refuse every membership change another node forwards to this one (see the module
    docstring): one log line, and pysyncobj's "request denied" to the sender if it waits for an
    answer. Forwarded commands of any other type go on to pysyncobj as before."""

    def refuse(node, message: dict) -> bool:
        command = message.get("command")
        if message.get("type") != FORWARDED or not isinstance(command, (bytes, bytearray)) \
                or bytes(command[:1]) != seam.MEMBERSHIP_COMMAND:
            return False
        try:
            change = " ".join(seam.membership_change(command))
        except ValueError:  # a sealed peer sent it, but its shape is pysyncobj's, not ours
            change = "a change"
        log.warning("membership: refused %s forwarded by %s: a leader appends only the changes "
                    "it runs itself, one at a time", change, node)
        if "request_id" in message:
            seam.transport(sync).send(node, {"type": FORWARDED_DONE,
                                             "request_id": message["request_id"],
                                             "error": FAIL_REASON.REQUEST_DENIED})
        return True

    route_messages(sync, frozenset(), lambda node, message: None, intercept=refuse)


class Members:
    """Membership changes and the members file of one node (see the module docstring)."""

    def __init__(self, sync, loop: asyncio.AbstractEventLoop, directory: str | None,
                 joining: bool, shared_secret: bool, on_change: Callable[[int], None],
                 hold_elections: Callable[[bool], None] = lambda hold: None,
                 election_max_s: Callable[[], float] | None = None):
        self._sync = sync
        self._loop = loop
        self._directory = directory
        self._joining = joining  # not a member yet: the members file waits for our addition
        state = standing.JOINING if joining else (
            standing.REMOVED if was_removed(directory) else standing.MEMBER)
        self.standing = standing.Standing(sync, state, hold_elections, election_max_s)
        self.changes = Changes(sync, shared_secret)
        self.known_elsewhere: collections.deque = collections.deque(maxlen=4)  # member lists
        self._on_change = on_change  # called with the new number of members (and joined=True)
        self._forward = Forwarder(sync, loop, request_type=REQUEST, done_type=DONE,
                                  error=MembershipError, begin=self._begin, encode=_encode,
                                  parse=_parse, to_wire=_to_wire, from_wire=_from_wire,
                                  grace_s=1.0, send=self._send)
        self._lingering: seam.Lingering | None = None  # removed members' last connections
        self._saved: frozenset[str] | None = None
        me = {str(sync.selfNode)} if joining else set()
        self.members: tuple[str, ...] = tuple(sorted(self._current() - me))

    def install(self) -> None:
        # Installed after the leadership transfer's handler, which holds forwarded commands
        # while a transfer runs, so it sees them first: a forwarded change is refused as it
        # arrives, never held and proposed later.
        refuse_forwarded_changes(self._sync)
        forward = self._forward

        def on_message(node, message):
            if message.get("type") in OWN_TYPES:
                self._on_own(node, message)
            else:
                forward.on_message(node, message, time.monotonic())

        route_messages(self._sync, forward.types | OWN_TYPES, on_message)
        self._lingering = seam.watch_membership(
            self._sync, self.standing.before_change, self._after_change)
        self._sync.addOnTickCallback(self.on_tick)

    def _after_change(self, kind: str, address: str, reverse: bool, changed: bool) -> None:
        """pysyncobj appended (or rolled back) a change on a follower: the members file follows
        at once. Left to the next tick, it could lag behind the acknowledgement of the entry,
        and a node killed in between would restart with the list from before the change while
        its log and the leader count it with the new one (two lists, two majorities)."""
        self.standing.after_change(kind, address, reverse, changed)
        if seam.is_leader(self._sync):
            # The leader's hook runs before its entry is in the journal: the next tick writes
            # the file, once the journal holding the entry is synced (``_persist``).
            return
        self._persist()

    def _current(self) -> set[str]:
        return members_now(self._sync)

    # -- the event loop's side -------------------------------------------------------------

    async def request(self, action: str, address: str, force: bool, timeout_s: float) -> Changed:
        own = action == REMOVE and address == str(self._sync.selfNode)

        def ask():
            return self._forward.ask(
                (action, address, bool(force), float(timeout_s)), float(timeout_s),
                f"no answer from the leader within {timeout_s:g} s"
                + ("" if own else "; see 'beanraft member list'"))

        if own:
            return await own_removal.remove_self(ask, self.standing, address, timeout_s)
        return await ask()

    @property
    def last(self) -> dict | None:
        """The outcome of the latest change this node knows of, for GET /admin/members."""
        return self.changes.last

    def pending(self) -> dict | None:
        """The change in progress, for GET /admin/members: this node's own if it leads, else
        what the leader said lately."""
        return self.changes.pending()

    @property
    def forwarder(self) -> Forwarder:
        """How a change asked here reaches the leader (its bound: ``max_waiting``)."""
        return self._forward

    # -- the tick --------------------------------------------------------------------------

    def on_tick(self) -> None:
        now = time.monotonic()
        self._lingering.close_due(now)
        while self.known_elsewhere:
            self.standing.know(self.known_elsewhere.popleft())
        self.standing.on_tick()
        self._persist()
        self._forward.on_tick(now)
        self.changes.on_tick(now)

    def _persist(self) -> None:
        current = frozenset(self._current())
        removed = self.standing.state == standing.REMOVED
        if removed:
            current = current - {str(self._sync.selfNode)}
        if current == self._saved:
            return
        if self._joining:
            # A learner hears from the leader too: only the entry that adds it makes it a member.
            if self.standing.state != standing.MEMBER:
                return
            self._joining = False
            log.info("this node is now a member of the cluster")
            self._on_change(len(current), True)
        changed = self._saved is not None
        self._saved = current
        self.members = tuple(sorted(current))
        if changed:
            log.info("members are now %s", ", ".join(self.members))
        self._on_change(len(current))
        if self._directory is None:
            return
        try:
            seam.journal(self._sync).sync()  # the entry that changed it is on disk first
            save_members(self._directory, current, removed=removed)
        except OSError as exc:
            self._saved = None  # try again next tick
            log.error("cannot write %s: %s", MEMBERS_NAME, exc)

    def _begin(self, reply, args: tuple, now: float, requester: str | None) -> None:
        """The forwarder's ``begin``, on the leader: ``Changes.begin``."""
        self.changes.begin(reply, args, now, requester)

    def _send(self, node, message: dict) -> bool:
        """Tick thread: an answer to ``node``, which may have been cut off as its removal was
        appended (it asked for its own removal) and still be reachable for a moment."""
        if seam.transport(self._sync).send(node, message):
            return True
        return self._lingering is not None and self._lingering.send(node, message)

    def _on_own(self, node, message: dict) -> None:
        if message.get("type") == standing.REMOVED_MESSAGE:
            self.standing.on_message(node, message)
        else:
            self.changes.on_pending(node, message)


# -- a request and its outcome on the wire (br_member_req, br_member_done) ------------------


def _encode(args: tuple) -> dict:
    action, address, force, timeout_s = args
    return {"action": action, "address": address, "force": force, "timeout_s": timeout_s}


def _parse(message: dict) -> tuple | None:
    action, address = message.get("action"), message.get("address")
    force, timeout_s = message.get("force"), message.get("timeout_s")
    if action not in (ADD, REMOVE, CHECK) or not isinstance(address, str) \
            or not isinstance(force, bool) or not isinstance(timeout_s, float):
        return None
    return action, address, force, timeout_s


def _to_wire(done: Changed) -> dict:
    return {"action": done.action, "address": done.address, "members": list(done.members),
            "elapsed_s": done.elapsed_s, "committed": done.committed}


def _from_wire(message: dict) -> Changed:
    return Changed(action=str(message.get("action")), address=str(message.get("address")),
                   members=tuple(message.get("members") or ()),
                   elapsed_s=float(message.get("elapsed_s", 0.0)),
                   committed=message.get("committed") is True)  # absent from earlier versions
