"""Every reach of BeanRaft into pysyncobj 0.3.17's private parts, and the start-up check of them all.

Theory of operation.
* pysyncobj's public API (``SyncObj``, ``SyncObjConf``, ``@replicated``, ``doTick``, ``getStatus``,
  ``addOnTickCallback``, the ``Journal`` interface) does not offer everything BeanRaft needs: a
  durable journal, peer connections of our own, another cipher, an fsync before an acknowledgement leaves, and
  a few fixes of its Raft timing. So BeanRaft patches or reads private places of pysyncobj.
* A rename in a later release would not raise anywhere: assigning a renamed module attribute just
  creates a new one that nobody reads, and for the cipher that means the raft port silently
  accepts unauthenticated pickles. Hence the rules of this module:
  - it is the only module of BeanRaft that spells a private name of pysyncobj; ``POINTS`` lists
    every such name with the reason BeanRaft needs it, and the functions below are the only way
    the rest of ``replication`` gets at them;
  - :func:`install` patches the module-level points when ``beanraft.replication.raft`` is imported,
    and never creates a name that is missing (it records it instead);
  - at start-up the Raft host calls :func:`check_library` before it builds the pysyncobj object,
    :func:`check_instance` right after, and :func:`check_sealed` once the cipher is in place. A
    version other than the one this seam was written for, a missing point, or a raft port that
    would take an unsealed message raises :class:`SeamError`, whose one-line message the node
    prints before it exits.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import struct
from time import monotonic as monotonic_now
from dataclasses import dataclass
from typing import Callable

import pysyncobj.journal as _pso_journal
import pysyncobj.syncobj as _pso
import pysyncobj.transport as _pso_transport
import pysyncobj.version as _pso_version
from pysyncobj.node import TCPNode
from pysyncobj.poller import SelectPoller
from pysyncobj.tcp_connection import CONNECTION_STATE

PYSYNCOBJ_VERSION = "0.3.17"  # the release every point below was read from
PICKLE_PROTOCOL = 5  # installed in place of pysyncobj's 2 for commands and peer messages
LINGER_S = 2.0  # a removed member's connection stays open this long for its last messages
PROBE_POLLS = 20  # polls of 10 ms the sealed-port probe waits for its connection to be dropped


class SeamError(RuntimeError):
    """pysyncobj is not the library this seam was written for; the node must not start."""


@dataclass(frozen=True)
class Point:
    """One private place of pysyncobj: where it lives, its name, and why BeanRaft touches it."""

    owner: str  # "module:<dotted>", "class:<module>.<Class>", "syncobj", "transport" or "notifier"
    name: str
    reason: str
    replaced: bool = False  # BeanRaft puts its own object there (install checks it is still ours)


POINTS: tuple[Point, ...] = (
    Point("module:pysyncobj.syncobj", "createJournal",
          "replaced by DurableJournal's factory: pysyncobj's journal never fsyncs", replaced=True),
    Point("module:pysyncobj.transport", "TcpServer",
          "replaced by raft_port.GuardedListener: backlog 5, one accept per poll, unbinds on EMFILE",
          replaced=True),
    Point("module:pysyncobj.transport", "TcpConnection",
          "replaced by peer_link.PeerConnection: pysyncobj's buffers grow by concatenation, it reads "
          "a frame whole before checking its seal, and a big message delays every heartbeat",
          replaced=True),
    Point("module:pysyncobj.pickle", "__protocol",
          "raised from 2 to 5: protocol 2 carries a job body as a latin-1 string, 1.5 times "
          "its size and 70 ms per 10 MB each way", replaced=True),
    Point("module:pysyncobj.syncobj", "_COMMAND_TYPE",
          "the type byte of a REGULAR log entry, whose batch the leader re-stamps, and of a "
          "MEMBERSHIP one, which a leader refuses when a command forwarded to it carries it"),
    Point("module:pysyncobj.syncobj", "_RAFT_STATE",
          "the number pysyncobj gives the leader role"),
    Point("class:pysyncobj.syncobj.SyncObj", "_isLeader",
          "the role of this node without building the whole getStatus() dict"),
    Point("class:pysyncobj.syncobj.SyncObj", "encryptor",
          "what the transport reads to seal an incoming connection; must return our cipher"),
    Point("class:pysyncobj.journal.Journal", "_destroy",
          "pysyncobj closes the journal through it: DurableJournal syncs and closes there"),
    Point("class:pysyncobj.transport.TCPTransport", "_onNewIncomingConnection",
          "where the listener hands an accepted connection (the sealed-port probe uses it too)"),
    Point("syncobj", "_SyncObj__encryptor",
          "replaced by our AES-GCM PeerCipher before the first tick (pysyncobj's is Fernet)"),
    Point("syncobj", "_SyncObj__transport",
          "the TCP transport whose send, receive handler and connections we wrap"),
    Point("syncobj", "_SyncObj__raftLog",
          "the journal pysyncobj built (ours): sync policy, append stamping, size"),
    Point("syncobj", "_SyncObj__raftNextIndex",
          "each follower's next index, kept monotonic against late acknowledgements"),
    Point("syncobj", "_SyncObj__raftState",
          "the role, read on every append to decide whether to stamp the entry"),
    Point("syncobj", "_SyncObj__raftElectionDeadline",
          "postponed after this node's own stall so unread heartbeats count"),
    Point("syncobj", "_SyncObj__lastResponseTime",
          "when each follower last answered the leader (silent_s in /status)"),
    Point("syncobj", "_SyncObj__pipeNotifier",
          "wakes the tick thread: a single node's once an entry is appended, any node's for a read"),
    Point("notifier", "_PipeNotifier__pipeR",
          "the read end of that pipe: a lone node's event loop, which ticks pysyncobj itself,"
          " watches it instead of the tick thread's poll"),
    Point("notifier", "_PipeNotifier__pipeW",
          "the write end of that pipe: both ends are closed when the node stops, since"
          " pysyncobj never closes them (two descriptors lost per node started in a process)"),
    Point("syncobj", "_SyncObj__raftLeader",
          "the leader whose fragments of a big message count as heartbeats on a follower, and"
          " the node a follower asks for a read index and answers read-index pings from; cleared"
          " when this node steps down for a higher term"),
    Point("syncobj", "_poller",
          "the poller of this node's connections, which report those fragments, and whose poll "
          "ends each tick: its wait is cut to a deadline set by the tick's work"),
    Point("syncobj", "_SyncObj__doApplyCommand",
          "shadowed per instance: our batches are decoded straight from the command's bytes "
          "instead of being copied twice by pysyncobj's slice and unpickling first"),
    Point("class:pysyncobj.syncobj.SyncObj", "_applyCommand",
          "takes a command we pickled ourselves in one copy (pysyncobj's @replicated call pickles "
          "the batch and then prefixes its type byte: two copies of a job body)"),
    Point("class:pysyncobj.syncobj.SyncObj", "_checkCommandsToApply",
          "appends the queued commands to the log; a lone node calls it before its tick's "
          "fsync, so that the same tick commits and applies them instead of the next one"),
    Point("syncobj", "_SyncObj__otherNodes",
          "the members besides this node: a lone leader (none) commits an entry of its term as "
          "soon as it is durable, without waiting for the next tick"),
    Point("syncobj", "_SyncObj__raftCommitIndex",
          "set by that lone leader's commit, as the leader's branch of a tick sets it; and put"
          " back on a follower after a snapshot message that installed nothing raised it"),
    Point("syncobj", "_SyncObj__leaderCommitIndex",
          "the leader's own copy of the commit index, set with it"),
    Point("syncobj", "_SyncObj__applyLogEntries",
          "applies the committed entries and calls their proposers back"),
    Point("syncobj", "_SyncObj__sendAppendEntries",
          "called by the leader as it starts applying newly committed entries, so its followers "
          "learn the commit index and apply them at the same time instead of after it; shadowed "
          "per instance so that the leader's call after applying, which would repeat that commit "
          "index to every follower (and make each answer), sends nothing new"),
    Point("syncobj", "_methodToID",
          "the number pysyncobj gives apply_entry inside every command (checked before the "
          "shortcut above takes a command)"),
    Point("transport", "_connections",
          "outgoing connections made before our cipher existed get it too"),
    Point("transport", "_onMessageReceivedCallback",
          "the message handler that the next-index guard and the read-index messages wrap"),
    Point("transport", "_server",
          "the listener (ours), given a tick to resume accepting and to drop unproven connections"),
    Point("transport", "_unknownConnections",
          "accepted connections not yet tied to a member; the probe removes its own from it"),
    Point("transport", "send",
          "wrapped so a follower's acknowledgement leaves only after its journal fsync"),
    Point("syncobj", "_SyncObj__readonlyNodes",
          "the nodes the leader replicates to without counting them: a joining node catches up"
          " there (a learner) before its addition is proposed"),
    Point("syncobj", "_SyncObj__raftMatchIndex",
          "how far a learner has acknowledged the log (getStatus lists members only)"),
    Point("syncobj", "_SyncObj__connectedNodes",
          "the nodes the leader sends entries to; a learner dropped by us leaves it too"),
    Point("syncobj", "_SyncObj__doChangeCluster",
          "shadowed per instance: a node learns it was added or removed, the leader tells a"
          " member it removes before cutting it off, and a learner's connection carries on"
          " as the member's"),
    Point("transport", "_nodes",
          "the nodes the transport accepts connections from (a learner is one)"),
    Point("syncobj", "_SyncObj__setCurrentTerm",
          "a leader that learns of a member at a higher term (prevote.py) takes that term, with no"
          " vote, as pysyncobj does on a vote request of a higher term"),
    Point("syncobj", "_SyncObj__setState",
          "and steps down to follower with it"),
    Point("syncobj", "_SyncObj__onLeaderChanged",
          "a member that gives up on its leader to ask for pre-votes fails the commands it"
          " forwarded, as pysyncobj does when it campaigns"),
    Point("class:pysyncobj.serializer.Serializer", "setTransmissionData",
          "the receiver of a leader's snapshot that BeanRaft replaces on each node"),
    Point("syncobj", "_SyncObj__serializer",
          "its receiver of a leader's snapshot is replaced by one that fsyncs the file before the"
          " rename and the directory after it, before the journal is emptied, and declines a"
          " snapshot that is not ahead of this node"),
    Point("transport", "_nodeAddrToNode",
          "the addresses a joining node accepts a connection from: a member added after it"
          " read the member list may lead the cluster that feeds it"),
)

_replacements: dict[tuple[str, str], object] = {}  # (module, name) -> the object we installed
_install_problems: list[str] = []


def _module_of(point: Point):
    return importlib.import_module(point.owner.split(":", 1)[1])


def _class_of(point: Point):
    module, _, name = point.owner.split(":", 1)[1].rpartition(".")
    return getattr(importlib.import_module(module), name, None)


def _where(point: Point) -> str:
    return f"{point.owner.split(':', 1)[-1]}.{point.name}"


# -- installation (at import) ------------------------------------------------------------------


def install(create_journal: Callable, listener: type, connection: type) -> None:
    """Patch the module-level points; a missing one is recorded (never created) for the check."""
    wanted = {("pysyncobj.syncobj", "createJournal"): create_journal,
              ("pysyncobj.transport", "TcpServer"): listener,
              ("pysyncobj.transport", "TcpConnection"): connection,
              ("pysyncobj.pickle", "__protocol"): PICKLE_PROTOCOL}
    for (module_name, name), value in wanted.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            _install_problems.append(f"{module_name}.{name} is missing")
            continue
        setattr(module, name, value)
        _replacements[(module_name, name)] = value


# -- checks (at start-up) ----------------------------------------------------------------------


def check_library() -> None:
    """Raise SeamError unless pysyncobj is 0.3.17 and every module and class point is in place."""
    version = getattr(_pso_version, "VERSION", None)
    if version != PYSYNCOBJ_VERSION:
        raise SeamError(f"pysyncobj {version} is installed; this BeanRaft was written against "
                        f"pysyncobj {PYSYNCOBJ_VERSION} (pip install pysyncobj=={PYSYNCOBJ_VERSION})")
    if _install_problems:
        raise SeamError(f"pysyncobj patch point {_install_problems[0]}")
    for point in POINTS:
        if point.owner.startswith("module:"):
            module = _module_of(point)
            value = getattr(module, point.name, _MISSING)
            if value is _MISSING:
                raise SeamError(f"pysyncobj patch point {_where(point)} is missing ({point.reason})")
            ours = _replacements.get((module.__name__, point.name), _MISSING)
            if point.replaced and value is not ours:
                raise SeamError(f"pysyncobj patch point {_where(point)} is not BeanRaft's any more "
                                f"({point.reason})")
        elif point.owner.startswith("class:"):
            cls = _class_of(point)
            if cls is None or not hasattr(cls, point.name):
                raise SeamError(f"pysyncobj patch point {_where(point)} is missing ({point.reason})")



def check_instance(sync) -> None:
    """Raise SeamError unless the pysyncobj object and its transport hold every instance point."""
    transport_ = getattr(sync, "_SyncObj__transport", None)
    for point in POINTS:
        if point.owner == "syncobj":
            holder, label = sync, "SyncObj"
        elif point.owner == "transport":
            holder, label = transport_, "TCPTransport"
        elif point.owner == "notifier":
            holder, label = getattr(sync, "_SyncObj__pipeNotifier", None), "PipeNotifier"
        else:
            continue
        if holder is None or not hasattr(holder, point.name):
            raise SeamError(f"pysyncobj patch point {label}.{point.name} is missing ({point.reason})")


def check_sealed(sync, cipher) -> None:
    """Raise SeamError if the raft port would accept a message not sealed with ``cipher``.

    Two checks. Every object pysyncobj reads its encryptor from holds ours. Then a probe: an
    accepted connection, made the way the listener makes it and handed to the transport the
    way the listener hands it, on one end of a socket pair, receives a well-formed but unsealed
    frame announcing a read-only node. A sealed transport drops it at once; an unsealed one would
    take it as a member of the cluster.
    """
    if sync.encryptor is not cipher:
        raise SeamError("the raft port would accept unauthenticated messages: "
                        "SyncObj.encryptor is not BeanRaft's cipher")
    for conn in transport(sync)._connections.values():
        if conn.encryptor is not cipher:
            raise SeamError("the raft port would accept unauthenticated messages: "
                            "a peer connection is not sealed")
    if _unsealed_message_accepted(sync):
        raise SeamError("the raft port would accept unauthenticated messages: "
                        "an unsealed frame was taken by the transport")


def _unsealed_message_accepted(sync) -> bool:
    tcp = transport(sync)
    poller = SelectPoller()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = incoming_connection_class()(poller=poller, socket=ours, timeout=5.0)
    try:
        tcp._onNewIncomingConnection(conn)
        theirs.sendall(_plain_frame("readonly"))
        for _ in range(PROBE_POLLS):
            poller.poll(0.01)
            if conn.state == CONNECTION_STATE.DISCONNECTED:
                break
        accepted = conn.state != CONNECTION_STATE.DISCONNECTED or any(c is conn for c in tcp._connections.values())
    finally:
        conn.disconnect()
        tcp._unknownConnections.discard(conn)
        theirs.close()
    return accepted


def _plain_frame(message) -> bytes:
    """A frame as an unsealed pysyncobj peer sends it: native int length, zlib(pickle(message))."""
    import zlib

    data = zlib.compress(pickle.dumps(message, PICKLE_PROTOCOL))
    return struct.pack("i", len(data)) + data


_MISSING = object()


# -- accessors (the rest of replication goes through these) -----------------------------------

REGULAR_COMMAND = bytes((_pso._COMMAND_TYPE.REGULAR,))  # type byte of a @replicated call entry
NO_OP_COMMAND = bytes((_pso._COMMAND_TYPE.NO_OP,))  # a whole no-op entry (a new leader's first)
MEMBERSHIP_COMMAND = bytes((_pso._COMMAND_TYPE.MEMBERSHIP,))  # type byte of a membership change
LEADER = _pso._RAFT_STATE.LEADER
FOLLOWER = _pso._RAFT_STATE.FOLLOWER
JournalBase = _pso_journal.Journal


def membership_change(command: bytes) -> tuple[str, ...]:
    """The change a MEMBERSHIP command carries (the caller checked its type byte): pysyncobj's
    pickle of ``[kind, address, node]``, as the strings of its first two parts ('add' or 'rem',
    the address). Raises ``ValueError`` on anything that does not unpickle to a sequence."""
    try:
        return tuple(str(part) for part in pickle.loads(command[1:])[:2])
    except Exception as exc:  # pickle raises many unrelated types on garbage
        raise ValueError(f"not a membership change: {exc}") from exc


def incoming_connection_class():
    """The connection class pysyncobj's transport builds connections from."""
    return _pso_transport.TcpConnection


def transport(sync):
    return sync._SyncObj__transport


def journal(sync):
    """The journal object pysyncobj appends to (a DurableJournal once installed)."""
    return sync._SyncObj__raftLog


def role(sync) -> int:
    """FOLLOWER, CANDIDATE or LEADER as pysyncobj numbers them."""
    return sync._SyncObj__raftState


def is_leader(sync) -> bool:
    return sync._isLeader()


def install_cipher(sync, cipher) -> None:
    """Seal every connection with ``cipher``: the ones accepted from now on take it from the
    object, and the outgoing ones, built in SyncObj.__init__, took the encryptor of that moment."""
    sync._SyncObj__encryptor = cipher
    for conn in transport(sync)._connections.values():
        conn.encryptor = cipher


def wrap_send(sync, wrapper: Callable[[Callable, object, object], object]) -> None:
    """Make ``transport.send(node, message)`` call ``wrapper(send, node, message)``."""
    tcp = transport(sync)
    send = tcp.send
    tcp.send = lambda node, message: wrapper(send, node, message)


def message_handler(sync) -> Callable:
    """The transport's current handler of peer messages (set back with the public setter)."""
    return transport(sync)._onMessageReceivedCallback


def next_index(sync) -> dict:
    """The leader's next index per follower node (the live dict pysyncobj updates)."""
    return sync._SyncObj__raftNextIndex


def election_deadline(sync) -> float:
    return sync._SyncObj__raftElectionDeadline


def set_election_deadline(sync, deadline: float) -> None:
    sync._SyncObj__raftElectionDeadline = deadline


def last_response_times(sync) -> dict:
    """Node -> monotonic time the follower last answered the leader (must read in the tick thread)."""
    return sync._SyncObj__lastResponseTime


def leader_node(sync):
    """The node this one takes for the leader (None while it knows of none)."""
    return sync._SyncObj__raftLeader


def adopt_term(sync, term: int) -> None:
    """Take ``term`` (above ours) as a follower with no vote and no leader: what pysyncobj does
    when a vote request of a higher term arrives, without the vote (tick thread)."""
    sync._SyncObj__setCurrentTerm(term, None)
    sync._SyncObj__setState(FOLLOWER)
    sync._SyncObj__raftLeader = None


def forget_leader(sync) -> None:
    """Know no leader any more, and fail the commands forwarded to the one we knew, as pysyncobj
    does as it starts an election (tick thread)."""
    if sync._SyncObj__raftLeader is not None:
        sync._SyncObj__raftLeader = None
        sync._SyncObj__onLeaderChanged()


def connection_to(sync, node):
    """The connection the transport uses for ``node`` (None if it has none)."""
    return transport(sync)._connections.get(node)


def poller(sync):
    """The poller that runs this node's peer connections."""
    return sync._poller


def method_id(sync, name: str) -> int:
    """The number pysyncobj writes into a command for a call of the replicated method ``name``."""
    return sync._methodToID[name]


def propose(sync, command: bytes, callback: Callable) -> None:
    """Queue a whole command (type byte and pickle) as a @replicated call would."""
    sync._applyCommand(command, callback)


def append_queued(sync) -> None:
    """Append the commands :func:`propose` queued to the log now, as the tick does after its
    commit and apply (a leader appends, a follower forwards; nothing if there is no leader)."""
    sync._checkCommandsToApply()


def commit_alone(sync, upto: int | None = None) -> None:
    """On a leader without other members, commit every entry of its log up to the last one
    (or up to index ``upto``) if that one is of its term, and apply them now: what the leader's
    branch of the next tick would do, with a majority of one. Call it only once those entries
    are durable (``sync_for_ack``, or a background sync that covered them)."""
    if sync._SyncObj__raftState != LEADER or sync._SyncObj__otherNodes:
        return
    raft_log = sync._SyncObj__raftLog
    if not len(raft_log):
        return
    _, last, term = raft_log[-1]
    if upto is not None and upto < last:
        first = raft_log[0][1]
        if upto < first:
            return
        _, last, term = raft_log[upto - first]
    if term != sync.raftCurrentTerm or last <= sync._SyncObj__raftCommitIndex:
        return
    sync._SyncObj__raftCommitIndex = last
    raft_log.setRaftCommitIndex(last)
    sync._SyncObj__leaderCommitIndex = last
    sync._SyncObj__applyLogEntries()


def hold_commit_index(sync, index: int) -> None:
    """Put the commit index back to ``index``, in the journal's record too (tick thread): a
    message that vouched for no entry of this node's log raised it (``snapshot_install.py``).
    Call it before the tick applies anything up to the raised index."""
    sync._SyncObj__raftCommitIndex = index
    journal(sync).setRaftCommitIndex(index)


def shortcut_apply(sync, shortcut: Callable[[bytes], object]) -> None:
    """Make pysyncobj apply a committed command by ``shortcut(command)``; the shortcut calls
    the returned original for any command it does not take itself."""
    original = sync._SyncObj__doApplyCommand
    sync._SyncObj__doApplyCommand = lambda command: shortcut(command, original)


def send_append_entries(sync) -> None:
    """The leader sends every follower what it lacks and its commit index now (tick thread),
    if the filter of :func:`filter_append_entries` lets it."""
    sync._SyncObj__sendAppendEntries()


def filter_append_entries(sync, wanted: Callable[[], bool]) -> None:
    """Make every append_entries round of the leader (pysyncobj's heartbeat, its round after each
    append and after each apply, :func:`send_append_entries`) go out only when ``wanted()``."""
    original = sync._SyncObj__sendAppendEntries

    def send() -> None:
        if wanted():
            original()

    sync._SyncObj__sendAppendEntries = send


def cap_poll_wait(sync, cap: Callable[[float], float]) -> None:
    """Make the poll that ends every ``doTick`` wait ``cap(timeout)`` instead of the ``timeout``
    the tick was given: the poll comes after the tick's work, which may set a nearer deadline."""
    poller = sync._poller
    poll = poller.poll

    def capped_poll(timeout: float) -> None:
        poll(cap(timeout))

    poller.poll = capped_poll


def connected_nodes(sync):
    """The nodes the leader sends entries to (the live set pysyncobj updates; tick thread)."""
    return sync._SyncObj__connectedNodes


def pipe_notifier(sync):
    """The object whose ``notify()`` wakes the tick thread's poll."""
    return sync._SyncObj__pipeNotifier


def close_pipe_notifier(sync) -> None:
    """Close both ends of :func:`pipe_notifier`'s pipe, once the node is destroyed (pysyncobj's
    destroy leaves them open). ``notify`` does nothing from then on: a late one, from the loop,
    must not write into whatever the descriptor's number is reused for."""
    notifier = getattr(sync, "_SyncObj__pipeNotifier", None)
    if notifier is None:
        return
    notifier.notify = lambda: None
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(notifier, name, -1)
        setattr(notifier, name, -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def hush_notifier(sync, hushed: Callable[[], bool]) -> None:
    """Make :func:`pipe_notifier`'s ``notify`` do nothing while ``hushed()`` (a lone node that
    ticks on its loop right after it proposes wakes nobody: a write and two reads fewer)."""
    notifier = pipe_notifier(sync)
    notify = notifier.notify

    def notify_unless_hushed() -> None:
        if not hushed():
            notify()

    notifier.notify = notify_unless_hushed


def wake_fd(sync) -> int:
    """The descriptor that becomes readable when :func:`pipe_notifier` is notified."""
    return pipe_notifier(sync)._PipeNotifier__pipeR


def knows_other_nodes(sync) -> bool:
    """Whether the transport has any node to talk to or accept (a member, a learner)."""
    return bool(transport(sync)._nodes)


def listener(sync):
    """The object pysyncobj's transport accepts connections with (a GuardedListener)."""
    return transport(sync)._server


# -- learners (membership.py) -------------------------------------------------------------------
#
# pysyncobj has no learner role, but its leader already replicates to "read-only" nodes without
# counting them in any majority (commit index, leader fallback, votes): a learner is a joining
# node put in that set by address, with a transport node of its own so that its connection is
# accepted (or made) as a named node's.


def node_named(address: str):
    """The node object pysyncobj keys its tables and connections by, for ``address``."""
    return TCPNode(address)


def add_learner(sync, address: str) -> None:
    """Leader only: replicate to ``address`` (snapshot, then log) without counting it."""
    node = TCPNode(address)
    know_node(sync, address)
    tcp = transport(sync)
    sync._SyncObj__readonlyNodes.add(node)
    sync._SyncObj__raftNextIndex[node] = sync.raftLastApplied + 1
    sync._SyncObj__raftMatchIndex[node] = 0
    sync._SyncObj__lastResponseTime.pop(node, None)
    conn = tcp._connections.get(node)
    if conn is not None and conn.state == CONNECTION_STATE.CONNECTED:
        sync._SyncObj__connectedNodes.add(node)


def learner_progress(sync, address: str) -> tuple[int, bool]:
    """(match index, answered at least once) of the learner ``address``."""
    node = TCPNode(address)
    return (int(sync._SyncObj__raftMatchIndex.get(node, 0) or 0),
            node in sync._SyncObj__lastResponseTime)


def promote_learner(sync, address: str) -> None:
    """Stop treating ``address`` as a learner; its transport node and connection stay for the
    addition that follows (see :func:`watch_membership`)."""
    sync._SyncObj__readonlyNodes.discard(TCPNode(address))


def drop_learner(sync, address: str) -> None:
    """Forget the learner (or a node whose addition never made it into the log): no more
    entries, its connection closed. Never call it for a member."""
    node = TCPNode(address)
    sync._SyncObj__readonlyNodes.discard(node)
    sync._SyncObj__connectedNodes.discard(node)
    for table in (sync._SyncObj__raftNextIndex, sync._SyncObj__raftMatchIndex,
                  sync._SyncObj__lastResponseTime):
        table.pop(node, None)
    tcp = transport(sync)
    if node in tcp._nodes:
        tcp.dropNode(node)


def know_node(sync, address: str) -> bool:
    """Make the transport talk to ``address`` (connect to it or accept it); False if it did."""
    node = TCPNode(address)
    tcp = transport(sync)
    if node in tcp._nodes:
        return False
    tcp.addNode(node)
    return True


def accept_unknown_nodes(sync, allow: Callable[[], bool], on_known: Callable[[str], None]) -> None:
    """While ``allow()``, an incoming connection that names an address this node does not know
    (sealed with the cluster secret all the same) is accepted as that node's; ``on_known(address)``
    is told."""
    tcp = transport(sync)
    original = tcp._onIncomingMessageReceived

    def on_incoming(conn, message):
        if isinstance(message, str) and conn.sendRandKey and message != "readonly" \
                and message not in tcp._nodeAddrToNode and allow():
            know_node(sync, message)
            on_known(message)
        original(conn, message)

    tcp._onIncomingMessageReceived = on_incoming


class Lingering:
    """The connections of members just removed, kept open (deaf) a moment: see
    :func:`watch_membership`. Tick thread only."""

    def __init__(self) -> None:
        self._held: list[tuple[float, TCPNode, object]] = []  # (when to close, node, connection)

    def hold(self, node: TCPNode, conn) -> None:
        conn.setOnMessageReceivedCallback(lambda _message: None)
        self._held.append((monotonic_now() + LINGER_S, node, conn))

    def send(self, node, message) -> bool:
        """Send ``message`` to the removed ``node`` on its lingering connection; False if it
        has none (never held, or closed already)."""
        for _due, held, conn in self._held:
            if held == node and conn.state == CONNECTION_STATE.CONNECTED:
                conn.send(message)
                return True
        return False

    def close_due(self, now: float) -> None:
        """Close the connections held for LINGER_S (call on every tick)."""
        while self._held and self._held[0][0] <= now:
            self._held.pop(0)[2].disconnect()


def watch_membership(sync, before: Callable[[str, str, bool], bool],
                     after: Callable[[str, str, bool, bool], None]) -> Lingering:
    """Call ``before(kind, address, reverse)`` and ``after(kind, address, reverse, changed)``
    around every change pysyncobj makes to its member list (``kind`` is 'add' or 'rem'; a
    ``reverse`` change undoes one whose entry the log lost). It runs where pysyncobj appends a
    membership entry, rolls one back, or replays one.

    When ``before`` returns True for a removal, the removed node's connection is not closed at
    once but lingers (deaf) for LINGER_S, so that what was just sent to it, or is sent in that
    time with the returned object's ``send``, can leave under load; call its ``close_due`` with
    the monotonic time on every tick to close those due.

    When a learner becomes a member, pysyncobj's transport would open a second connection to
    it and leave the first one open; the first one, already caught up, is kept instead.
    """
    original = sync._SyncObj__doChangeCluster
    tcp = transport(sync)
    lingering = Lingering()

    def change(request, reverse=False):
        kind, address = str(request[0]), str(request[1])
        linger = before(kind, address, reverse)
        node = TCPNode(address)
        if linger and node in tcp._connections:
            # pysyncobj's dropNode then closes nothing.
            lingering.hold(node, tcp._connections.pop(node))
        kept = tcp._connections.get(node)
        changed = original(request, reverse)
        fresh = tcp._connections.get(node)
        if kept is not None and fresh is not None and fresh is not kept \
                and kept.state == CONNECTION_STATE.CONNECTED:
            tcp._connections[node] = kept  # the fresh one was never connected: nothing to close
        after(kind, address, reverse, bool(changed))
        return changed

    sync._SyncObj__doChangeCluster = change
    return lingering


def replace_snapshot_receiver(sync, receive: Callable) -> None:
    """Snapshots the leader sends are taken by ``receive`` (pysyncobj's ``setTransmissionData``
    contract: chunk tuples in, True once the whole snapshot is in place)."""
    sync._SyncObj__serializer.setTransmissionData = receive
