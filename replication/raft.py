"""The Raft host: one pysyncobj node, its tick thread, and the bridge to the asyncio loop.

Theory of operation.
* pysyncobj runs in one thread of ours (``autoTick=False``; we call ``doTick``), so heartbeats and
  elections do not depend on the event loop. That thread applies committed entries to the state
  machine under ``self.lock`` and runs every pysyncobj callback.
* Nothing that pysyncobj calls may raise (a raising apply is re-run forever on every node; a
  raising callback applies an entry twice): ``_apply`` and ``_on_result`` catch everything, and
  the state machine itself never raises.
* Results and replicated events cross into the loop through one deque and at most one
  ``call_soon_threadsafe`` per burst.
* Durability: the journal is fsynced before a follower's ack leaves the node and before each tick
  computes a commit index (see ``journal.py``); the leader syncs right after sending new entries,
  while its followers write them.
* Peer connections are ours (``peer_link.py``): linear in the bytes they move, big messages in
  sealed fragments that small acknowledgements may pass, each fragment from the leader counted
  as a heartbeat; messages sealed with AES-GCM under the cluster secret (``peer_crypto.py``)
  instead of pysyncobj's Fernet. pysyncobj pickles with protocol 5 instead of 2, so a job body
  is one ``bytes`` object in the log and on the wire (protocol 2 turns it into a latin-1 string).
* Snapshots use our own codec (``jobs`` snapshot bytes inside ``snapshot_file``), never pickle,
  and are written by a forked child (``snapshot_writer.py``): the tick thread only forks.
* Time is the leader's: it stamps every entry as it appends it to its log (``_stamp_on_append``,
  ``clock.py``), whichever node proposed it, so replicas apply the same time at the same index.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import fcntl
import hashlib
import io
import logging
import os
import pickle
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from pysyncobj.monotonic import monotonic
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON

from beanraft.jobs.commands import Op
from beanraft.jobs.machine import Machine

from .clock import ClusterClock
from .disk import DiskBudget, job_cost, release_reserve_for_start, snapshot_estimate
from .codec import EntryFormatError, decode_entry, stamp_entry
from . import peer_link, raft_port, seam
from .journal import DurableJournal, SyncPolicy
from .peer_crypto import PeerCipher, derive_key
from .read_index import ReadIndex, TYPES as _READ_INDEX_TYPES
from .snapshot_file import SnapshotAnchor, read_snapshot
from .snapshot_writer import SnapshotWriter
from .status import RaftStatus, read_status

log = logging.getLogger("beanraft.raft")
T = TypeVar("T")

JOURNAL_NAME = "raft.journal"
SNAPSHOT_NAME = "raft.snapshot"
#: Snapshot and compact the journal after this many entries or bytes of commands (defaults).
COMPACT_ENTRIES = 50_000
COMPACT_BYTES = 16 * 1024 * 1024


# pysyncobj's log entries are a type byte and, for a call of a @replicated method, the pickled
# (method id, args). Ours has a single bytes argument: the encoded batch.
_REGULAR = seam.REGULAR_COMMAND
_LEADER = seam.LEADER
_PICKLE_PROTOCOL = seam.PICKLE_PROTOCOL


class _PlainData(pickle.Unpickler):
    """Unpickles tuples, ints and bytes only.

    Protocol 2 writes bytes as a call of ``_codecs.encode``: the one global it may look up.
    """

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise pickle.UnpicklingError(f"{module}.{name} in a log entry")


_ENTRY_HEAD = 9  # version byte and time stamp of an encoded batch (codec.py)
_MEMO, _TUPLE1, _TUPLE2, _STOP, _FRAME = b"\x94", b"\x85", b"\x86", b".", b"\x95"
_INTS = {b"K": 1, b"M": 2, b"J": 4}  # BININT1, BININT2, BININT
_BYTES = {b"C": 1, b"B": 4, b"\x8e": 8}  # SHORT_BINBYTES, BINBYTES, BINBYTES8
_CALL_TAIL = _MEMO + _TUPLE1 + _MEMO + _TUPLE2 + _MEMO + _STOP


def _single_bytes_argument(command: bytes) -> tuple[int, int] | None:
    """Where the batch lies in ``command`` if it is a protocol 4/5 pickle of (int, (bytes,)).

    That is the exact opcode sequence ``pickle.dumps((method, (entry,)), 5)`` writes; anything
    else gives None and is unpickled instead. Reading the opcodes spares two copies of a job body.
    """
    at = 1
    if command[at:at + 1] != b"\x80" or command[at + 1] not in (4, 5):
        return None
    at += 2
    if command[at:at + 1] == _FRAME:
        at += 9
    width = _INTS.get(command[at:at + 1])
    if width is None:
        return None
    at += 1 + width
    width = _BYTES.get(command[at:at + 1])
    if width is None:
        return None
    size = int.from_bytes(command[at + 1:at + 1 + width], "little")
    start = at + 1 + width
    end = start + size
    tail = command[end:end + 9 + len(_CALL_TAIL)]
    if tail[:1] == _FRAME:
        tail = tail[9:]
    if tail != _CALL_TAIL or size < _ENTRY_HEAD:
        return None
    return start, end


def restamp_command(command: bytes, stamp: Callable[[], int]) -> bytes:
    """The pysyncobj command ``command`` with our batch inside re-stamped with ``stamp()``.

    Commands of other types (pysyncobj's no-op and membership entries) come back unchanged.
    Raises ``pickle.UnpicklingError``, ``EntryFormatError`` or ``ValueError`` on anything else.
    """
    if command[:1] != _REGULAR:
        return command
    span = _single_bytes_argument(command)
    if span is not None:  # the usual shape: patch the stamp in place, one copy of the command
        start, end = span
        view = memoryview(command)
        entry_head = bytes(view[start:start + _ENTRY_HEAD])
        stamped = stamp_entry(entry_head, stamp())
        return b"".join((view[:start], stamped, view[start + _ENTRY_HEAD:]))
    call = _PlainData(io.BytesIO(command[1:])).load()
    if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], tuple)
            and len(call[1]) == 1 and isinstance(call[1][0], bytes)):
        raise ValueError("not a call with one bytes argument")
    method, (entry,) = call
    return _REGULAR + pickle.dumps((method, (stamp_entry(entry, stamp()),)), _PICKLE_PROTOCOL)


def _put_cost(commands) -> int:
    """The disk cost (``disk.job_cost``) of the well-formed puts among ``commands``."""
    return sum(job_cost(len(c[6])) for c in commands
               if isinstance(c, (list, tuple)) and len(c) == 7 and c[0] == Op.PUT
               and isinstance(c[6], bytes))


def _create_journal(journal_file):
    """Replacement for pysyncobj's journal factory (see journal.py for why)."""
    if journal_file is None:
        return DurableJournal(None)
    snapshot = os.path.join(os.path.dirname(journal_file), SNAPSHOT_NAME)
    return DurableJournal(journal_file, snapshot)


seam.install(create_journal=_create_journal, listener=raft_port.GuardedListener,
             connection=peer_link.PeerConnection)
# pysyncobj's appendEntriesBatchSizeBytes is set above any entry (a batch holds one job of at most
# the job cap and under 1 MiB of others), so it never cuts an entry into its "transmission"
# pieces: peer_link fragments big messages instead.
APPEND_SLACK_BYTES = 4 << 20
UNCAPPED_JOB_BYTES = 1 << 30  # what the append limit assumes when no job cap is given


def _check_bindable(address: str) -> None:
    """Raise OSError naming ``address`` if it cannot be bound.

    pysyncobj reports a busy port as SyncObjException('BindError') after logging a traceback and
    retrying, which reaches the operator as two tracebacks instead of a one-line reason.
    """
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pysyncobj binds it
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise OSError(exc.errno, f"raft address {address}: {exc.strerror}") from None


class DataDirLocked(OSError):
    """Another process already uses this data directory."""


def _make_private(directory: str) -> None:
    """Create ``directory`` as 0700, or make an existing one 0700 and its files 0600.

    The journal and snapshots hold every job body, and the data directory is the node's alone.
    A directory made by an older version (0755, files 0644) is tightened at start.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tightened = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                os.chmod(entry.path, 0o600)
                tightened += 1
    if tightened:
        log.info("made %d files in %s readable by their owner only (0600)", tightened, directory)


def _lock_directory(directory: str) -> int:
    """Hold an exclusive lock on DIR/lock for the life of the process (as beanstalkd does)."""
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DataDirLocked(f"cannot lock {directory}: another process is using it") from None
    return fd


def keep_next_index_monotonic(sync: SyncObj) -> None:
    """Stop a late acknowledgement from moving a follower's next index backwards.

    pysyncobj's leader sets ``nextIndex`` to whatever a successful ``next_node_idx`` says.
    With entries sent as soon as they are appended, the ack of an older append_entries arrives
    after newer entries went out, so ``nextIndex`` regresses, the leader sends those entries
    again, and the follower truncates entries it already acknowledged (logged by pysyncobj as
    CRITICAL "truncating already-applied log entries") before re-adding them. Keeping
    ``nextIndex`` monotonic on success removes the re-sends; a real conflict still resets it
    (``reset`` is set on those replies).
    """
    transport = seam.transport(sync)
    handler = seam.message_handler(sync)
    next_index = seam.next_index(sync)

    def on_message(node, message):
        if (isinstance(message, dict) and message.get("type") == "next_node_idx"
                and message.get("success") and not message.get("reset")):
            before = next_index.get(node)
            handler(node, message)
            after = next_index.get(node)
            if before is not None and after is not None and after < before:
                next_index[node] = before
            return
        handler(node, message)

    transport.setOnMessageReceivedCallback(on_message)


class CommitError(Exception):
    """pysyncobj gave up on a batch (``reason``: its FAIL_REASON); it may still commit later,
    so the caller proposes it again (the entries are idempotent) until a deadline."""

    def __init__(self, reason: int):
        super().__init__(f"commit failed: reason {reason}")
        self.reason = reason


@dataclass
class Timing:
    """Raft timing, in seconds. See docs/how-to/tune.md for the trade-offs."""

    tick_s: float = 0.02
    heartbeat_s: float = 0.05
    election_min_s: float = 0.5
    election_max_s: float = 1.0
    connection_timeout_s: float = 60.0
    connection_retry_s: float = 0.5
    leader_fallback_s: float = 2.0

    def __post_init__(self) -> None:
        assert self.election_min_s > 3 * self.heartbeat_s, "election timeout must exceed 3 heartbeats"
        assert self.election_max_s > self.election_min_s
        assert self.connection_timeout_s >= self.election_max_s
        assert self.leader_fallback_s > self.heartbeat_s


@dataclass
class RaftConfig:
    """Everything the Raft host needs to start."""

    self_addr: str
    peers: list[str] = field(default_factory=list)
    data_dir: str | None = None
    secret: str | None = None
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    timing: Timing = field(default_factory=Timing)
    compact_entries: int = COMPACT_ENTRIES
    compact_bytes: int = COMPACT_BYTES
    #: The cap the state machine holds every put to, the same on every replica: the node passes
    #: the protocol's hard cap (each node's parser enforces its own -z). None: no cap.
    max_job_size: int | None = None


class _Host(SyncObj):
    """The pysyncobj object. It holds no replicated attributes of its own."""

    def __init__(self, owner: "RaftNode", self_addr: str, peers: list[str], conf: SyncObjConf):
        self._owner = owner  # set before SyncObj.__init__: kept out of pysyncobj's own state
        super().__init__(self_addr, peers, conf)

    @replicated
    def apply_entry(self, entry: bytes):
        return self._owner._apply(entry)


class RaftNode:
    """Owns the state machine, the pysyncobj node and its tick thread."""

    def __init__(self, config: RaftConfig, loop: asyncio.AbstractEventLoop,
                 on_events: Callable[[list], None]):
        self.config = config
        self.loop = loop
        self.lock = threading.Lock()
        # Every replica must judge a job by the same rule, whatever its own -z: the state
        # machine only enforces the protocol's hard cap; each node's parser enforces its -z.
        cap = config.max_job_size
        self.machine = Machine(max_job_size=sys.maxsize if cap is None else cap)
        self.applied_index = 0
        self._on_events = on_events
        self._outbox: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._stopping = False
        self._tmpdir = None
        self._lock_fd = -1
        self._compaction_asked = False
        self._status = RaftStatus.empty(config.self_addr)
        self._status_at = 0.0
        self.settled_commit_index = 0  # the commit index as of the status before the latest
        self.leader_changes = 0
        self._last_leader: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self.clock = ClusterClock()
        self._appended_at: dict[int, int] = {}  # log index -> monotonic ns it was appended
        self._disk = DiskBudget(config.data_dir)
        try:
            self._sync = self._build(config)
        except BaseException:
            self._release_directory()  # a refused start leaves nothing locked behind
            raise
        self._journal: DurableJournal = seam.journal(self._sync)
        self._journal.policy = config.sync
        self._journal.release_reserve = self._disk.release_reserve
        self._wrap_transport()
        self._stamp_on_append()
        # Runs after the tick's new entries went out to the followers and before it waits: the
        # leader's own fsync overlaps its followers' instead of following their acknowledgements.
        self._sync.addOnTickCallback(self._journal.sync_for_ack)
        self._keep_next_index_monotonic()
        peer_link.set_progress_hook(seam.poller(self._sync), self._on_leader_progress)
        self._reads = ReadIndex(self._sync, lambda token, index: self._post(("read", token, index)))
        self._read_waiters: dict[int, asyncio.Future] = {}
        self._apply_waiters: list[asyncio.Future] = []
        self._sync.addOnTickCallback(self._reads.on_tick)
        self._route_read_index_messages()
        if not config.peers:
            self._wake_on_append()
        self._thread = threading.Thread(target=self._run_ticks, name="raft-tick", daemon=True)

    # -- construction ----------------------------------------------------------------------

    def _build(self, config: RaftConfig) -> _Host:
        directory = config.data_dir
        if directory is None:
            self._tmpdir = directory = tempfile.mkdtemp(prefix="beanraft-")
            journal = None
        else:
            _make_private(directory)
            self._lock_fd = _lock_directory(directory)
            release_reserve_for_start(directory)
            journal = os.path.join(directory, JOURNAL_NAME)
        t = config.timing
        if not config.peers:
            # Alone, a node need not wait out a real election timeout to become leader.
            t = Timing(tick_s=t.tick_s, heartbeat_s=0.01, election_min_s=0.04, election_max_s=0.08,
                       connection_timeout_s=t.connection_timeout_s,
                       connection_retry_s=t.connection_retry_s, leader_fallback_s=t.leader_fallback_s)
        secret = config.secret if config.peers else (config.secret or secrets.token_hex(16))
        self._snapshots = SnapshotWriter(os.path.join(directory, SNAPSHOT_NAME))
        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=(config.max_job_size or UNCAPPED_JOB_BYTES) + APPEND_SLACK_BYTES,
            sendBufferSize=peer_link.SOCKET_BUFFER_BYTES,
            recvBufferSize=peer_link.SOCKET_BUFFER_BYTES,
            bindAddress=config.self_addr,
            password=None,  # pysyncobj's Fernet is replaced by our cipher below
            journalFile=journal,
            fullDumpFile=os.path.join(directory, SNAPSHOT_NAME),
            serializer=self._serialize,
            serializeChecker=self._snapshots.check,
            deserializer=self._deserialize,
            logCompactionMinEntries=config.compact_entries,
            logCompactionMinTime=10 ** 9,
            appendEntriesPeriod=t.heartbeat_s,
            raftMinTimeout=t.election_min_s,
            raftMaxTimeout=t.election_max_s,
            connectionTimeout=t.connection_timeout_s,
            connectionRetryTime=t.connection_retry_s,
            leaderFallbackTimeout=t.leader_fallback_s,
            commandsWaitLeader=False,
            maxBindRetries=3,
            dynamicMembershipChange=False,
            onStateChanged=self._on_state_changed,
        )
        seam.check_library()
        _check_bindable(config.self_addr)
        host = _Host(self, config.self_addr, config.peers, conf)
        try:
            seam.check_instance(host)
            raft_port.attach(host)
            if secret is not None:
                # Before the first tick, so before any connection is accepted or made.
                cipher = PeerCipher(derive_key(secret))
                seam.install_cipher(host, cipher)
                seam.check_sealed(host, cipher)
        except seam.SeamError:
            host.destroy()  # autoTick=False: releases the raft port and the journal now
            raise
        return host

    def _wrap_transport(self) -> None:
        """A follower's acknowledgement leaves only after the entries it acknowledges are on disk.

        The leader's own entries need no fsync before they are sent: it counts itself towards a
        commit only at the start of its next tick, and ``_run_ticks`` syncs the journal right
        before every tick. So the leader's fsync and its followers' run at the same time.
        """
        journal = self._journal

        def send_after_sync(send, node, message):
            if isinstance(message, dict) and message.get("type") == "next_node_idx":
                journal.sync_for_ack()
            return send(node, message)

        seam.wrap_send(self._sync, send_after_sync)

    def _stamp_on_append(self) -> None:
        """The leader stamps the cluster's time into each entry as it appends it to its log.

        Followers append what the leader sent them, stamp included; only the leader appends
        commands taken from its queue (its own and those its followers forwarded to it). Every
        node notes when each entry reached its log: the clock follows the cluster's time from
        then, not from the apply, which on a follower waits for the next append_entries.
        """
        sync = self._sync
        journal = self._journal
        add = journal.add
        clock = self.clock
        machine = self.machine
        appended_at = self._appended_at

        def stamp() -> int:
            return clock.stamp(not_before_ns=machine.now_ns)

        def add_stamped(command, idx, term):
            if seam.role(sync) == _LEADER:
                try:
                    command = restamp_command(command, stamp)
                except Exception as exc:  # never break the tick: apply_batch copes with any time
                    log.error("cannot stamp log entry %d: %s", idx, exc)
            add(command, idx, term)
            appended_at[idx] = time.monotonic_ns()

        journal.add = add_stamped

    def _keep_next_index_monotonic(self) -> None:
        keep_next_index_monotonic(self._sync)

    def _route_read_index_messages(self) -> None:
        """Our read-index messages go to ``read_index.py``; pysyncobj never sees them."""
        handler = seam.message_handler(self._sync)
        reads = self._reads

        def on_message(node, message):
            if isinstance(message, dict) and message.get("type") in _READ_INDEX_TYPES:
                reads.on_message(node, message)
            else:
                handler(node, message)

        seam.transport(self._sync).setOnMessageReceivedCallback(on_message)

    def _wake_on_append(self) -> None:
        """A single node commits an entry on the tick after it is appended: make that tick now.

        Without peers no socket wakes the tick thread's poll, so an appended entry would wait a
        whole tick period before it is committed.
        """
        notifier = seam.pipe_notifier(self._sync)
        journal = self._journal
        add = journal.add

        def add_and_wake(command, idx, term):
            add(command, idx, term)
            notifier.notify()

        journal.add = add_and_wake

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the tick thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking, flush the journal and release the raft port."""
        self._stopping = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._snapshots.stop()  # reaps the writer (it dies with the tick thread)
        try:
            self._sync.destroy()  # autoTick=False: closes the transport and the journal now
        except Exception:  # already destroyed or never bound
            log.debug("raft destroy", exc_info=True)
        self._release_directory()

    def _release_directory(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the data directory's lock
            self._lock_fd = -1
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _run_ticks(self) -> None:
        sync, journal = self._sync, self._journal
        single = not self.config.peers
        period = self.config.timing.tick_s
        stall_s = max(period, self.config.timing.heartbeat_s) * 2
        while not self._stopping:
            try:
                journal.sync_for_ack()
                journal.sync_due()
                busy = single and self._single_node_busy()
                began = monotonic()
                sync.doTick(0.0 if busy else period)
                if monotonic() - began > stall_s + period:
                    self._forgive_own_stall()
                self._after_tick()
            except Exception:
                log.exception("raft tick failed")
                time.sleep(period)

    def _forgive_own_stall(self) -> None:
        """After a long tick (a snapshot, a burst of applies, a starved thread), read first.

        pysyncobj checks a follower's election deadline at the start of a tick, before it polls
        its sockets. After this node itself stalled, the leader's heartbeats are waiting unread
        in the socket, yet the deadline has passed, and without PreVote the election it would
        start deposes a healthy leader. Our own stall is no evidence that the leader failed:
        give the next tick a chance to read those heartbeats first.
        """
        sync = self._sync
        if seam.role(sync) == seam.FOLLOWER:
            grace = monotonic() + 2 * self.config.timing.heartbeat_s
            if seam.election_deadline(sync) < grace:
                seam.set_election_deadline(sync, grace)

    def _on_leader_progress(self, conn) -> None:
        """A fragment of a big message arrived: if it comes from our leader, it is a heartbeat.

        While a big append_entries is on the wire, the leader's heartbeats are not queued behind
        it (``peer_link``); the authenticated bytes of that append prove the leader alive.
        """
        sync = self._sync
        leader = seam.leader_node(sync)
        if seam.role(sync) != seam.FOLLOWER or leader is None:
            return
        if seam.connection_to(sync, leader) is not conn:
            return
        deadline = monotonic() + self.config.timing.election_min_s
        if seam.election_deadline(sync) < deadline:
            seam.set_election_deadline(sync, deadline)

    def _single_node_busy(self) -> bool:
        raft_log = self._journal
        commit = self._sync.raftCommitIndex
        return raft_log[-1][1] > commit or commit > self._sync.raftLastApplied

    def _after_tick(self) -> None:
        now = time.monotonic()
        if now - self._status_at >= 0.1:
            self._status_at = now
            previous, self._status = self._status, read_status(self._sync, self.applied_index)
            self.settled_commit_index = previous.leader_commit_index or previous.commit_index
            leader = self._status.leader
            if leader != self._last_leader:
                self._last_leader = leader
                self.leader_changes += 1
                log.info("leader is now %s (term %d)", leader or "unknown", self._status.term)
                self._post(("notify", None))
        journal = self._journal
        # Ask once per crossing of the threshold: the journal only shrinks a tick after the
        # snapshot is written, and asking again meanwhile would write a second one at once.
        # A snapshot is written in this thread and stalls heartbeats while it is written; a
        # leader of a cluster therefore waits for a larger journal than its followers do, so
        # the nodes rarely stall at the same moment and the leader seldom stalls at all.
        limit = self.config.compact_bytes
        if self.config.peers and self._status.role == "leader":
            limit *= 4
        over = journal.size_bytes > limit
        if over and not self._compaction_asked and self._status.role != "candidate":
            self._sync.forceLogCompaction()
        self._compaction_asked = over
        if self._disk.check(self.machine, journal.size_bytes) and self._status.role != "candidate":
            log.info("data volume tight: writing a snapshot to reclaim journal space")
            self._sync.forceLogCompaction()
        journal.tight = self._disk.tight

    def _on_state_changed(self, old, new) -> None:
        names = {0: "follower", 1: "candidate", 2: "leader"}
        log.info("role %s -> %s", names.get(old, old), names.get(new, new))
        self._status_at = 0.0
        self._post(("notify", None))

    # -- apply (tick thread) ---------------------------------------------------------------

    def _apply(self, entry: bytes):
        """Apply one committed batch. Never raises: pysyncobj would re-run it forever."""
        try:
            now_ns, commands = decode_entry(entry)
        except EntryFormatError as exc:
            log.error("skipping undecodable log entry: %s", exc)
            return None
        try:
            with self.lock:
                replies, events = self.machine.apply_batch(now_ns, commands)
                self.applied_index = index = self._sync.raftLastApplied + 1
            self._observe_time(index)
            self._disk.applied(_put_cost(commands))
            if events:
                self._post(("events", events))
            self._post(("notify", None))
            return replies
        except Exception:
            log.exception("state machine failed to apply an entry")
            return None

    def _observe_time(self, index: int) -> None:
        appended_at = self._appended_at
        self.clock.observe(self.machine.now_ns, appended_at.pop(index, None))
        # Indices enter the dict in increasing order (an entry appended again keeps its place),
        # so those the log lost before applying them (no-ops, a snapshot installed) are in front.
        while appended_at:
            first = next(iter(appended_at))
            if first > index:
                break
            del appended_at[first]

    # -- submission and the bridge to asyncio ----------------------------------------------

    def submit(self, entry: bytes) -> asyncio.Future:
        """Propose one encoded batch; the future gets the list of replies or a CommitError."""
        fut = self.loop.create_future()
        self._sync.apply_entry(entry, callback=lambda res, err: self._on_result(fut, res, err))
        return fut

    def _on_result(self, fut, res, err) -> None:
        try:
            self._post(("result", fut, res, err))
        except Exception:
            log.exception("result callback failed")

    def _post(self, item) -> None:
        self._outbox.append(item)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _drain(self) -> None:
        self._drain_scheduled = False
        notify = False
        while self._outbox:
            item = self._outbox.popleft()
            if item[0] == "result":
                _, fut, res, err = item
                if fut.done():
                    continue
                if err == FAIL_REASON.SUCCESS and res is not None:
                    fut.set_result(res)
                else:
                    fut.set_exception(CommitError(err))
            elif item[0] == "events":
                self._on_events(item[1])
            elif item[0] == "read":
                fut = self._read_waiters.pop(item[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(item[2])
            else:
                notify = True
        if notify:
            waiters, self._apply_waiters = self._apply_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            for listener in list(self._listeners):
                listener()

    async def read_index(self, timeout_s: float) -> int:
        """An index that holds every entry committed before this call (``read_index.py``).

        Raises ``asyncio.TimeoutError`` after ``timeout_s``; the caller may ask again.
        """
        token = self._reads.new_token()
        fut = self._read_waiters[token] = self.loop.create_future()
        self._reads.requests.append(token)
        seam.pipe_notifier(self._sync).notify()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._read_waiters.pop(token, None)

    def applied_through(self) -> int:
        """The index of the last entry this node applied (pysyncobj's own no-ops included)."""
        return max(self.applied_index, self._sync.raftLastApplied)

    async def applied_or(self, timeout_s: float) -> None:
        """Return once entries were applied or the role changed, or after ``timeout_s``."""
        fut = self.loop.create_future()
        self._apply_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            pass

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop after entries were applied or the role changed."""
        self._listeners.append(callback)

    # -- snapshots (tick thread) -----------------------------------------------------------

    def _serialize(self, filename: str, data) -> None:
        """Start writing a snapshot of the state at the last applied entry (in a child)."""
        last, prev, cluster = data
        anchor = SnapshotAnchor(last=tuple(last), prev=tuple(prev),
                                cluster=tuple(sorted(str(n) for n in cluster)))
        try:
            # O(1) estimate: the parent does not encode the state (the child does).
            self._disk.check_room(snapshot_estimate(self.machine))
        except OSError as exc:
            log.warning("snapshot not written: %s", exc)
            self._snapshots.refuse()
            return
        # We run on the tick thread, the only one that changes the machine: the fork freezes it
        # at the last applied entry, which is what the anchor names.
        self._snapshots.start(anchor, self.machine.snapshot, filename)

    def _deserialize(self, filename: str):
        anchor, state = read_snapshot(filename)
        machine = Machine.restore(state)
        with self.lock:
            self.machine = machine
            self.applied_index = anchor.last[1]
        log.info("state restored from snapshot at index %d", anchor.last[1])
        self._post(("notify", None))
        return anchor.last, anchor.prev, set(anchor.cluster)

    # -- reads (any thread) ----------------------------------------------------------------
    # The node reads replicated state only through these. Each holds the state lock, which the
    # tick thread needs to apply entries: keep what runs under it short.

    def read(self, query: Callable[[Machine], T]) -> T:
        """``query(machine)`` under the state lock, for the read-only queries of ``jobs``."""
        with self.lock:
            return query(self.machine)

    def job_counts(self) -> dict[str, int]:
        """Jobs per state (ready, reserved, delayed, buried); O(1)."""
        with self.lock:
            return self.machine.job_counts()

    def node_epoch(self, node: str) -> int | None:
        """The live epoch the cluster recorded for ``node``, or None."""
        with self.lock:
            return self.machine.node_epoch.get(node)

    def next_deadline_ns(self) -> int | None:
        """When the state machine's earliest timer fires, or None."""
        with self.lock:
            return self.machine.next_deadline_ns()

    def state_digest(self) -> tuple[int, str, dict[str, int]]:
        """(applied index, sha256 hex digest of the whole state, job counts) of one moment.

        Replicas have equal digests at an equal index. Blocking and O(state): the state is
        encoded under the lock (about 0.15 s for 60,000 jobs) and hashed after it; call it from
        a worker thread, never from the event loop or the tick thread.
        """
        with self.lock:
            index = self.applied_index
            counts = self.machine.job_counts()
            state = self.machine.snapshot()
        return index, hashlib.sha256(state).hexdigest(), counts

    # -- status ----------------------------------------------------------------------------

    @property
    def status(self) -> RaftStatus:
        """The latest status copy (refreshed by the tick thread every 100 ms)."""
        return self._status

    def status_age_s(self) -> float:
        """Seconds since the tick thread last refreshed the status (long: it is stalled)."""
        return time.monotonic() - self._status_at

    def cluster_now_ns(self) -> int:
        """The cluster's time now (what the state machine will be told next), in ns."""
        return max(self.clock.now_ns(), self.machine.now_ns)

    def is_leader(self) -> bool:
        return seam.is_leader(self._sync)

    def journal_failed(self) -> bool:
        """The journal cannot be written any more: nothing new can be acknowledged."""
        return self._journal.failed is not None

    def admit_job(self, size: int) -> bool:
        """May a new ``size``-byte job be accepted, given the room left on the data volume?"""
        return not self._journal.low_space and self._disk.admit(self.machine, size)

    def journal_low_space(self) -> bool:
        """The data volume is nearly full (new jobs are refused): see ``disk.py``."""
        return self._journal.low_space or self._disk.tight
