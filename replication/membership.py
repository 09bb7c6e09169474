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
* pysyncobj has no learner role: a new member counts towards the majority from the moment the
  leader appends its addition. So the leader (a) refuses, unless forced, an addition whose new
  majority the members it hears from plus the new node could not form, and an removal whose
  smaller majority the remaining members it hears from could not form; (b) keeps an addition
  pending until the new member has acknowledged the whole log as of its addition (snapshot, then
  log), and refuses any other change meanwhile: at most one member is ever behind because of a
  change. docs/explanation/membership.md gives the whole argument.
* The members are persisted in ``members.json`` in the data directory, written (atomically,
  after the journal is synced) whenever this node's view of the membership changes. At start it
  overrides ``--peer``, which only seeds a brand-new cluster, and it overrides the member list of
  the snapshot the node loads at start (pysyncobj issue #133: a stale snapshot would otherwise
  give the node an old view until the log is replayed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import forwarding, seam, transfer
from .forwarding import Forwarder, route_messages

log = logging.getLogger("beanraft.membership")

MEMBERS_NAME = "members.json"
FORMAT = 1
REQUEST, DONE = "br_member_req", "br_member_done"
DEFAULT_TIMEOUT_S = 30.0
HEARD_WITHIN_S = 2.0  # a follower counts as reachable when it answered the leader this recently
ADD, REMOVE = "add", "remove"
CHECK = "check"  # the checks of a removal of the leader, before it hands its leadership over

# Why a change did not happen (MembershipError.code); docs/reference/http.md lists them.
NO_LEADER = forwarding.NO_LEADER
BUSY = forwarding.BUSY
ALREADY_MEMBER = "already_member"
NOT_MEMBER = "not_member"
NO_MAJORITY = "no_majority"
NO_SECRET = "no_secret"
DENIED = "denied"
TIMEOUT = forwarding.TIMEOUT
TRANSFER_FAILED = "transfer_failed"
NOT_RUNNING = "not_running"
REACH_TIMEOUT_S = 3.0
ANSWER_FIRST_S = 0.3  # between the answer to a member that asked for its own removal and it


class MembershipError(forwarding.Refused):
    """The membership did not change (or its outcome is not known yet); ``code`` says why."""


@dataclass(frozen=True)
class Changed:
    action: str
    address: str
    members: tuple[str, ...]
    elapsed_s: float


def majority(size: int) -> int:
    return size // 2 + 1


# -- the members file ------------------------------------------------------------------------


def load_members(directory: str | None) -> list[str] | None:
    """The members persisted in ``directory`` (this node included), or None for a new node."""
    if directory is None:
        return None
    path = os.path.join(directory, MEMBERS_NAME)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1 << 20))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MembershipError("corrupt", f"cannot read {path}: {exc}") from None
    members = doc.get("members") if isinstance(doc, dict) else None
    if doc.get("format") != FORMAT or not isinstance(members, list) \
            or not all(isinstance(m, str) for m in members):
        raise MembershipError("corrupt", f"{path} is not a BeanRaft members file")
    return sorted(members)


def save_members(directory: str, members) -> None:
    """Write the member list durably: temporary file, fsync, rename, fsync of the directory."""
    path = os.path.join(directory, MEMBERS_NAME)
    temp = path + ".tmp"
    data = json.dumps({"format": FORMAT, "members": sorted(members)}).encode() + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def start_peers(directory: str | None, self_addr: str, seed: list[str]) -> tuple[list[str], bool]:
    """The peers to start with, and whether they came from the members file (not ``seed``)."""
    persisted = load_members(directory)
    if persisted is None:
        return list(seed), False
    if len(persisted) == 1:
        # A single node: its members are itself, whatever address it has today (without --raft
        # it picks a new private Raft port at every start).
        return [], True
    peers = [m for m in persisted if m != self_addr]
    if len(peers) == len(persisted):
        log.warning("this node's Raft address %s is not among the members in %s (%s): it was "
                    "removed, or started under another address", self_addr, MEMBERS_NAME,
                    ", ".join(persisted))
    if seed and sorted(seed) != peers:
        log.info("members from %s: %s (the --peer list only seeds a new cluster)",
                 MEMBERS_NAME, ", ".join(persisted))
    return peers, True


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


@dataclass
class _Run:
    """The change in progress on the leader."""

    action: str
    address: str
    started: float
    until: float
    reply: Callable[[object], None] | None
    committed: bool = False
    log_index: int = 0  # of the addition: the new member must acknowledge this much


class Members:
    """Membership changes and the members file of one node (see the module docstring)."""

    def __init__(self, sync, loop: asyncio.AbstractEventLoop, directory: str | None,
                 joining: bool, shared_secret: bool, on_change: Callable[[int], None]):
        self._sync = sync
        self._loop = loop
        self._directory = directory
        self._joining = joining  # not a member yet: the members file waits for our addition
        self._shared_secret = shared_secret
        self._on_change = on_change  # called with the new number of members (and joined=True)
        self._forward = Forwarder(sync, loop, request_type=REQUEST, done_type=DONE,
                                  error=MembershipError, begin=self._begin, encode=_encode,
                                  parse=_parse, to_wire=_to_wire, from_wire=_from_wire,
                                  grace_s=1.0)
        self._run: _Run | None = None
        self._saved: frozenset[str] | None = None
        self._deferred: tuple[str, float] | None = None  # a removal to propose, and when
        me = {str(sync.selfNode)} if joining else set()
        self.members: tuple[str, ...] = tuple(sorted(self._current() - me))

    def install(self) -> None:
        forward = self._forward
        route_messages(self._sync, forward.types,
                       lambda node, message: forward.on_message(node, message, time.monotonic()))
        self._sync.addOnTickCallback(self.on_tick)

    def _current(self) -> set[str]:
        return {str(n) for n in self._sync.otherNodes} | {str(self._sync.selfNode)}

    # -- the event loop's side -------------------------------------------------------------

    async def request(self, action: str, address: str, force: bool, timeout_s: float) -> Changed:
        return await self._forward.ask(
            (action, address, bool(force), float(timeout_s)), float(timeout_s),
            f"no answer from the leader within {timeout_s:g} s; see 'beanraft member list'")

    # -- the tick --------------------------------------------------------------------------

    def on_tick(self) -> None:
        now = time.monotonic()
        self._persist()
        if self._deferred is not None and now >= self._deferred[1]:
            address, self._deferred = self._deferred[0], None
            if self._run is not None and self._run.address == address:
                self._sync.removeNodeFromCluster(address, self._on_committed)
        self._forward.on_tick(now)
        if self._run is not None:
            self._advance(now)

    def _persist(self) -> None:
        current = frozenset(self._current())
        if current == self._saved:
            return
        if self._joining:
            # Only members hear from a leader: until then this node is not one.
            if seam.leader_node(self._sync) is None:
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
            save_members(self._directory, current)
        except OSError as exc:
            self._saved = None  # try again next tick
            log.error("cannot write %s: %s", MEMBERS_NAME, exc)

    def _reachable(self, now: float) -> set[str]:
        """The members the leader heard from lately, itself included."""
        answered = seam.last_response_times(self._sync)
        heard = {str(node) for node, at in answered.items() if now - at <= HEARD_WITHIN_S}
        return (heard & self._current()) | {str(self._sync.selfNode)}

    def _begin(self, reply, args: tuple, now: float, requester: str | None) -> None:
        """On the leader: refuse at once what cannot work, else propose the change."""
        action, address, force, timeout_s = args
        members = self._current()
        me = str(self._sync.selfNode)
        run = self._run
        if run is not None:
            if not force or run.reply is not None:
                reply(MembershipError(BUSY, f"a membership change is in progress ({self._doing()});"
                                      " wait for it to finish, then ask again"))
                return
            log.warning("membership: forced past the pending addition of %s", run.address)
            self._run = None
        reachable = self._reachable(now)
        if action == ADD:
            if address in members:
                reply(MembershipError(ALREADY_MEMBER, f"{address} is already a member"))
                return
            if not self._shared_secret:
                reply(MembershipError(NO_SECRET, "this node runs alone with a secret of its own: "
                                      "restart it with --raft and --cluster-secret-file to grow"))
                return
            need = majority(len(members) + 1)
            if not force and len(reachable) + 1 < need:
                reply(MembershipError(NO_MAJORITY, f"with {address} the cluster needs {need} of "
                                      f"{len(members) + 1} members, and the leader hears from "
                                      f"{len(reachable)}; bring members back first "
                                      "(or force it)"))
                return
            self._sync.addNodeToCluster(address, self._on_committed)
        else:
            if address not in members:
                reply(MembershipError(NOT_MEMBER, f"{address} is not a member (members: "
                                      f"{', '.join(sorted(members))})"))
                return
            if address == me and action != CHECK:
                reply(MembershipError(NO_LEADER, f"{address} leads the cluster: ask again, the "
                                      "leadership moves first"))
                return
            left = len(reachable - {address})
            need = majority(len(members) - 1)
            if not force and left < need:
                reply(MembershipError(NO_MAJORITY, f"without {address} the cluster needs {need} "
                                      f"of {len(members) - 1} members and the leader hears "
                                      f"from {left}: it could not commit (force it to remove "
                                      "anyway)"))
                return
            if action == CHECK:
                reply(Changed(action=action, address=address, members=tuple(sorted(members)),
                              elapsed_s=0.0))
                return
            if requester == address:
                # The leader cuts the member off as it appends the removal: an answer sent
                # after that would never reach it. So it is answered first, and the removal
                # proposed a few ticks later, once the answer has left.
                reply(Changed(action=action, address=address,
                              members=tuple(sorted(members - {address})), elapsed_s=0.0))
                reply = None
                self._deferred = (address, now + ANSWER_FIRST_S)
            else:
                self._sync.removeNodeFromCluster(address, self._on_committed)
        self._run = _Run(action=action, address=address, started=now, until=now + timeout_s,
                         reply=reply)
        log.info("membership: %s %s proposed", action, address)

    def _doing(self) -> str:
        run = self._run
        what = f"{'adding' if run.action == ADD else 'removing'} {run.address}"
        if run.committed and run.action == ADD:
            match = self._match(run.address)
            what += f", catching up: {match} of {run.log_index} entries"
        return what

    def _match(self, address: str) -> int:
        raw = self._sync.getStatus()
        return int(raw.get("match_idx_server_" + address, 0) or 0)

    def _on_committed(self, _result, err) -> None:
        run = self._run
        if run is None:
            return
        if err != FAIL_REASON.SUCCESS:
            self._finish(MembershipError(DENIED, f"the leader could not commit the change "
                                         f"(pysyncobj reason {err}): it was just elected or "
                                         "another change is being committed; ask again"))
            return
        run.committed = True
        run.log_index = self._sync.raftCommitIndex
        log.info("membership: %s %s committed at index %d", run.action, run.address,
                 run.log_index)
        if run.action == REMOVE:
            self._finish(None)

    def _advance(self, now: float) -> None:
        run = self._run
        if not seam.is_leader(self._sync):
            self._finish(MembershipError(NO_LEADER, f"the leader lost its role during the change "
                                         f"({self._doing()}); see 'beanraft member list'"))
            return
        if run.committed and run.action == ADD and self._match(run.address) >= run.log_index:
            log.info("membership: %s caught up (%d entries) in %.1f s", run.address,
                     run.log_index, now - run.started)
            self._finish(None)
            return
        if now > run.until and run.reply is not None:
            reply, run.reply = run.reply, None
            reply(MembershipError(TIMEOUT, f"not done within {run.until - run.started:.0f} s: "
                                  f"{self._doing()}; the change stays pending until then"))

    def _finish(self, error: MembershipError | None) -> None:
        run, self._run = self._run, None
        if error is not None:
            log.warning("membership: %s %s failed: %s", run.action, run.address, error)
            outcome = error
        else:
            outcome = Changed(action=run.action, address=run.address,
                              members=tuple(sorted(self._current())),
                              elapsed_s=round(time.monotonic() - run.started, 3))
        if run.reply is not None:
            run.reply(outcome)

    @property
    def forwarder(self) -> Forwarder:
        """How a change asked here reaches the leader (its bound: ``max_waiting``)."""
        return self._forward

    def pending(self) -> dict | None:
        """The change in progress on this node (its leader), for GET /admin/members."""
        run = self._run
        return None if run is None else {"action": run.action, "address": run.address,
                                         "committed": run.committed}


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
            "elapsed_s": done.elapsed_s}


def _from_wire(message: dict) -> Changed:
    return Changed(action=str(message.get("action")), address=str(message.get("address")),
                   members=tuple(message.get("members") or ()),
                   elapsed_s=float(message.get("elapsed_s", 0.0)))
