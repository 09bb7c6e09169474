"""The Raft host: one pysyncobj node, its tick thread, and the bridge to the asyncio loop.

Theory of operation.
* pysyncobj runs in one thread of ours (``autoTick=False``; we call ``doTick``), so heartbeats and
  elections do not depend on the event loop. That thread applies committed entries to the state
  machine under ``self.lock`` and runs every pysyncobj callback. A lone node (no peer, not
  joining) has no peer whose timing could wait for the loop: it ticks on the event loop itself,
  and a batch proposed there is committed from within ``submit``, its fsync done there or by
  the sync helper process; the first time its transport knows another node, the ticks move to
  the thread for good (``lone_loop.py``).
* Nothing that pysyncobj calls may raise (a raising apply is re-run forever on every node; a
  raising callback applies an entry twice): ``_apply`` and ``_on_result`` catch everything, and
  the state machine itself never raises.
* Results and replicated events cross into the loop through one deque and at most one
  ``call_soon_threadsafe`` per burst.
* Durability: the journal is fsynced before a follower's ack leaves the node and before each tick
  computes a commit index (see ``journal.py``); the leader syncs right after sending new entries,
  while its followers write them. As it starts applying newly committed entries that a
  follower's client waits for, the leader sends the new commit index (``_tell_commit_first``),
  so that follower applies at the same time; any other commit index goes with the next round,
  within ``COMMIT_TELL_WITHIN_S`` (``commit_tell.py``). A follower's loop hears of an apply at
  once only while something there waits for one (``_notify_applied``).
* Peer connections are ours (``peer_link.py``): linear in the bytes they move, big messages in
  sealed fragments that small acknowledgements may pass, each fragment from the leader counted
  as a heartbeat; messages sealed with AES-GCM under the cluster secret (``peer_crypto.py``)
  instead of pysyncobj's Fernet. pysyncobj pickles with protocol 5 instead of 2, so a job body
  is one ``bytes`` object in the log and on the wire (protocol 2 turns it into a latin-1 string).
* A job body is copied as little as we can: a command is built in one copy
  (``entries.call_command``), the leader patches its stamp in place (``restamp_command``), and a
  committed command is applied by decoding the batch straight from its bytes (``_apply_command``).
* Snapshots use our own codec (``jobs`` snapshot bytes inside ``snapshot_file``), never pickle,
  and are written by a forked child (``snapshot_writer.py``): the tick thread only forks.
  ``snapshots.py`` decides when a node takes one.
* A member campaigns only after a majority granted it a pre-vote (``prevote.py``): a member that
  was cut off cannot depose a healthy leader when it comes back.
* Time is the leader's: it stamps every entry as it appends it to its log (``_stamp_on_append``,
  ``clock.py``), whichever node proposed it, so replicas apply the same time at the same index.

By concern: this module builds the node, runs its tick thread and applies entries;
``config.py`` holds what it starts from, ``datadir.py`` the data directory, ``glue.py`` the
wrappers around pysyncobj (through ``seam``), ``entries.py`` pysyncobj's entry bytes and the
leader's stamp, ``bridge.py`` the way results and read indexes reach the asyncio loop,
``lone_loop.py`` a lone node's ticks on that loop, ``commit_tell.py`` when the leader tells a
commit index, ``snapshots.py`` when a snapshot is taken and how it is written and loaded, and
``reads.py`` what the node reads.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable

from pysyncobj import SyncObjConf
from pysyncobj.monotonic import monotonic  # pysyncobj's clock: every tick-thread deadline is on it

from beanraft.jobs.machine import Machine

from . import peer_link, raft_port, seam, standing
from .background_sync import BackgroundSync
from .backup import BackupBusy, BackupStream, BackupTaker
from .bridge import CommitError, LoopBridge
from .burst_log import BurstLog
from .clock import ClusterClock
from .codec import EntryFormatError, decode_entry
from .commit_tell import CommitTelling
from .config import (APPEND_SLACK_BYTES, COMPACT_BYTES, COMPACT_ENTRIES, UNCAPPED_JOB_BYTES,
                     RaftConfig, Timing)
from .datadir import (JOURNAL_NAME, SNAPSHOT_NAME, DataDirLocked, lock_directory, make_private,
                      remove_stale_files)
from .disk import DiskBudget, release_reserve_for_start
from .entries import batch_view, put_cost, restamp_command
from .glue import (Host, PysyncobjGlue, answers_carry_their_term, check_bindable,
                   keep_next_index_monotonic, truncate_only_on_conflict)
from .membership import Members, start_peers, was_removed
from .journal import DurableJournal
from .lone_loop import LoneLoop
from .peer_crypto import PeerCipher, derive_key
from .prevote import PreVote
from .read_index import ReadIndex
from .restore import check_restored, forget_restore
from .rules import RulesCensus, stop_for_newer_rules
from .reads import StateReads
from .snapshot_install import install_only_ahead
from .snapshots import Snapshots
from .status import RaftStatus, read_status
from .transfer import Transfers

# Names other modules and tests import from here.
__all__ = ["BackupBusy", "BackupStream", "COMPACT_BYTES", "COMPACT_ENTRIES", "JOURNAL_NAME", "SNAPSHOT_NAME", "CommitError",
           "DataDirLocked", "RaftConfig", "RaftNode", "Timing", "keep_next_index_monotonic",
           "truncate_only_on_conflict", "answers_carry_their_term",
           "restamp_command"]

log = logging.getLogger("beanraft.raft")

CAMPAIGN_HOLD_ELECTIONS = 2  # a restarted member waits this many election timeouts for a leader

JOIN_QUIET_S = 10.0 ** 6  # the election timeout of a node not yet added to the cluster

LAZY_NOTIFY_S = 0.05  # a follower's loop hears of applied entries no one waits for this late


class RaftNode(PysyncobjGlue, LoopBridge, LoneLoop, CommitTelling, Snapshots, StateReads):
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
        self._commit_sent = 0  # the commit index of the leader's latest append_entries round
        self._commit_tell_at: float | None = None  # a commit index held back goes out by then
        self._tell_now = False  # a round for the commit index alone may go out (_tell_commit_now)
        self._forwarded_upto = 0  # the highest index of a batch a follower forwarded to us
        self._on_events = on_events
        self._outbox: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._unresolved: set[asyncio.Future] = set()  # submitted batches awaiting their result
        self.on_journal_failed: Callable[[], None] = lambda: None  # told on the loop, once
        self._stopping = False
        self._tmpdir = None
        self._lock_fd = -1
        self._compaction_asked_at: int | None = None  # journal bytes when we last asked
        self._status = RaftStatus.empty(config.self_addr)
        self._status_at = 0.0
        self.settled_commit_index = 0  # the commit index as of the status before the latest
        self.leader_changes = 0
        self._last_leader: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._campaign_hold_until: float | None = None  # see glue._hold_first_campaign
        self.clock = ClusterClock()
        self._appended_at: dict[int, int] = {}  # log index -> monotonic ns it was appended
        self._disk = DiskBudget(config.data_dir)
        self._restored_at: int | None = None  # the restore's index until the cluster passes it
        try:
            self._sync = self._build(config)
        except BaseException:
            self._release_directory()  # a refused start leaves nothing locked behind
            raise
        self._read_waiters: dict[int, asyncio.Future] = {}
        self._apply_waiters: set[asyncio.Future] = set()
        self._notify_owed_at: float | None = None  # a follower's first apply not yet notified
        self._journal: DurableJournal = seam.journal(self._sync)
        self._wrap_pysyncobj(config)
        self._install_parts(config, loop)
        self._single = not self._peers
        # A lone node ticks on the event loop until another node comes into view (see below).
        self._on_loop = self._single and not config.join
        self._loop_thread = threading.get_ident()  # replaced in start() by the loop's thread
        self._loop_timer: asyncio.TimerHandle | None = None
        self._wake_fd = -1
        self._in_tick = False
        self._hushed = False  # bridge.submit proposes on the loop, then ticks at once
        self._tick_queued = False  # a tick follows an inline commit at the loop's next turn
        self._background = BackgroundSync(loop, self._on_background_synced)
        # One traceback per burst of failed ticks, not per tick (burst_log.py).
        self._failures = BurstLog(log, "raft tick failed", "raft ticks succeed again")
        period = config.timing.tick_s
        self._stall_s = max(period, config.timing.heartbeat_s) * 2
        if self._single and not self._on_loop:
            self._wake_on_append()
        self._thread = threading.Thread(target=self._run_ticks, name="raft-tick", daemon=True)

    # -- construction ----------------------------------------------------------------------

    def _wrap_pysyncobj(self, config: RaftConfig) -> None:
        """Our journal's policy, and our wrappers around pysyncobj's sending, receiving,
        appending, ticking and applying (``glue.py``, through ``seam``)."""
        self._journal.policy = config.sync
        self._journal.release_reserve = self._disk.release_reserve
        self._journal.on_failed = lambda: self._post(("journal failed",))
        self._wrap_transport()
        self._stamp_on_append()
        self._send_only_what_is_new()
        # Runs after the tick's new entries went out to the followers and before it waits: the
        # leader's own fsync overlaps its followers' instead of following their acknowledgements.
        self._sync.addOnTickCallback(self._journal.sync_for_ack)
        self._sync.addOnTickCallback(self._tell_commit_when_due)
        self._keep_next_index_monotonic()
        self._truncate_only_on_conflict()
        self._answers_carry_their_term()
        peer_link.set_progress_hook(seam.poller(self._sync), self._on_leader_progress)
        self._apply_id = seam.method_id(self._sync, "apply_entry_v0")
        seam.shortcut_apply(self._sync, self._apply_command)
        seam.cap_poll_wait(self._sync, self._poll_wait)

    def _install_parts(self, config: RaftConfig, loop: asyncio.AbstractEventLoop) -> None:
        """Read indexes, backups, leadership transfer, rules, membership and pre-vote, each
        with its own message handlers, in this order."""
        self._reads = ReadIndex(self._sync, lambda token, index: self._post(("read", token, index)),
                                before_remote_answers=self._tell_commit_for_reads)
        self._sync.addOnTickCallback(self._reads.on_tick)
        self._backups = BackupTaker(self, self._sync)
        self._sync.addOnTickCallback(self._backups.on_tick)
        self._route_read_index_messages()
        self.transfers = Transfers(self._sync, loop)  # leadership transfer (transfer.py)
        self.transfers.install()
        self.rules = RulesCensus(self._sync, config.max_rules)  # rules.py
        self.rules.install()
        self.members = Members(self._sync, loop, config.data_dir, joining=config.join,
                               shared_secret=config.secret is not None or bool(self._peers),
                               on_change=self._members_changed,
                               hold_elections=self._hold_elections,
                               election_max_s=lambda: config.timing.election_max_s)
        self.members.install()
        self.members.changes.refuses = lambda address: self.rules.refuses(address,
                                                                          self.machine.rules)
        # Installed after every other message handler, so it sees each message first.
        self._prevote = PreVote(
            self._sync, may_vote=lambda: self.members.standing.state != standing.JOINING,
            lease_s=lambda: self._timing(self._single).election_min_s)
        self._prevote.install()

    def _build(self, config: RaftConfig) -> Host:
        """The pysyncobj node, on the data directory (locked), its journal and snapshot."""
        directory, journal = self._open_directory(config)
        # The members file of the data directory overrides --peer, which only seeds a new cluster.
        self._peers, _from_file = start_peers(directory if config.data_dir else None,
                                             config.self_addr, config.peers)
        secret = config.secret if self._peers else (config.secret or secrets.token_hex(16))
        snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
        self._open_snapshots(snapshot_path)
        conf = self._conf(config, journal, snapshot_path)
        seam.check_library()
        check_bindable(config.self_addr)
        host = Host(self, config.self_addr, self._peers, conf)
        try:
            seam.check_instance(host)
            if config.join or was_removed(config.data_dir):
                # Not a member (yet, or any more): an election now would only raise our term,
                # and the vote request that carries it would depose the leader that adds us.
                conf.raftMinTimeout, conf.raftMaxTimeout = JOIN_QUIET_S, JOIN_QUIET_S + 1
                seam.set_election_deadline(host, monotonic() + JOIN_QUIET_S)
            raft_port.attach(host)
            # A leader's snapshot is taken only when it is ahead of this node (snapshot_install).
            install_only_ahead(host, snapshot_path, self._snapshots.abandon)
            if secret is not None:
                # Before the first tick, so before any connection is accepted or made.
                cipher = PeerCipher(derive_key(secret))
                seam.install_cipher(host, cipher)
                seam.check_sealed(host, cipher)
        except seam.SeamError:
            host.destroy()  # autoTick=False: releases the raft port and the journal now
            seam.close_pipe_notifier(host)
            raise
        return host

    def _open_directory(self, config: RaftConfig) -> tuple[str, str | None]:
        """The data directory, locked and tidied, and the journal's path in it (None for a
        node without one, which keeps its snapshots in a temporary directory)."""
        directory = config.data_dir
        if directory is None:
            self._tmpdir = directory = tempfile.mkdtemp(prefix="beanraft-")
            return directory, None
        make_private(directory)
        self._lock_fd = lock_directory(directory)
        remove_stale_files(directory)
        self._restored_at = check_restored(directory, config.self_addr, config.peers)
        release_reserve_for_start(directory)
        return directory, os.path.join(directory, JOURNAL_NAME)

    def _conf(self, config: RaftConfig, journal: str | None, snapshot_path: str) -> SyncObjConf:
        t = self._timing(alone=not self._peers)
        return SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=(config.max_job_size or UNCAPPED_JOB_BYTES) + APPEND_SLACK_BYTES,
            sendBufferSize=peer_link.SOCKET_BUFFER_BYTES,
            recvBufferSize=peer_link.SOCKET_BUFFER_BYTES,
            bindAddress=config.self_addr,
            password=None,  # pysyncobj's Fernet is replaced by our cipher below
            journalFile=journal,
            fullDumpFile=snapshot_path,
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
            dynamicMembershipChange=True,
            onStateChanged=self._on_state_changed,
        )

    def _timing(self, alone: bool) -> Timing:
        t = self.config.timing
        if not alone:
            return t
        # Alone, a node need not wait out a real election timeout to become leader.
        return Timing(tick_s=t.tick_s, heartbeat_s=0.01, election_min_s=0.04, election_max_s=0.08,
                      connection_timeout_s=t.connection_timeout_s,
                      connection_retry_s=t.connection_retry_s, leader_fallback_s=t.leader_fallback_s)

    def _members_changed(self, count: int, joined: bool = False) -> None:
        """Tick thread: a node that grows from one member takes a cluster's timing (and back);
        a node that joined takes it as it hears from the leader that added it."""
        alone = count == 1
        if alone == self._single and not joined:
            return
        self._single = alone
        if alone and not self._on_loop:
            self._wake_on_append()
        t, conf = self._timing(alone), self._sync.conf
        conf.appendEntriesPeriod = t.heartbeat_s
        conf.raftMinTimeout = t.election_min_s
        conf.raftMaxTimeout = t.election_max_s
        log.info("%s: Raft timing of %s", "alone" if alone else "members joined",
                 "a single node" if alone else "a cluster")

    def _hold_elections(self, hold: bool) -> None:
        """Tick thread: a node that is not a member never campaigns; one that is again does."""
        conf = self._sync.conf
        if hold:
            conf.raftMinTimeout, conf.raftMaxTimeout = JOIN_QUIET_S, JOIN_QUIET_S + 1
            seam.set_election_deadline(self._sync, monotonic() + JOIN_QUIET_S)
            return
        t = self._timing(alone=self._single)
        conf.raftMinTimeout, conf.raftMaxTimeout = t.election_min_s, t.election_max_s
        seam.set_election_deadline(self._sync, monotonic() + t.election_max_s)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start ticking: on the event loop (call this from its thread) for a lone node, else
        in the tick thread."""
        if self._peers and self._sync.raftCurrentTerm > 0:
            self._campaign_hold_until = monotonic() + CAMPAIGN_HOLD_ELECTIONS * \
                self.config.timing.election_max_s
            self._sync.addOnTickCallback(self._hold_first_campaign)
        if not self._on_loop:
            self._thread.start()
            return
        self._loop_thread = threading.get_ident()
        seam.hush_notifier(self._sync, lambda: self._hushed)
        self._wake_fd = seam.wake_fd(self._sync)
        self.loop.add_reader(self._wake_fd, self._on_wake)
        self._loop_timer = self.loop.call_soon(self._on_loop_timer)

    def stop(self) -> None:
        """Stop ticking, flush the journal and release the raft port."""
        self._stopping = True
        self._leave_loop()
        if self._thread.is_alive():
            seam.pipe_notifier(self._sync).notify()  # out of a tick's wait for its sockets
            self._thread.join(timeout=5)
        self._snapshots.stop()  # reaps the writer (it dies with the tick thread)
        try:
            self._sync.destroy()  # autoTick=False: closes the transport and the journal now
        except Exception:  # already destroyed or never bound
            log.debug("raft destroy", exc_info=True)
        if not self._thread.is_alive():  # else it may still poll the pipe: leave it open
            seam.close_pipe_notifier(self._sync)
        self._release_directory()

    def _release_directory(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the data directory's lock
            self._lock_fd = -1
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _run_ticks(self) -> None:
        period = self.config.timing.tick_s
        while not self._stopping:
            busy = self._single and self._single_node_busy()
            if not self._tick(0.0 if busy else period):
                time.sleep(period)

    def _poll_wait(self, wait_s: float) -> float:
        """How long the tick's poll may wait. It comes last in the tick, after the tick's work:
        a deadline that work set (a commit index held back, an apply not yet notified) shortens
        the wait the tick was given before it (tick thread)."""
        tell_at = self._commit_tell_at
        owed_at = self._notify_owed_at
        if tell_at is None and owed_at is None:
            return wait_s
        now = monotonic()
        if tell_at is not None:
            wait_s = min(wait_s, tell_at - now)
        if owed_at is not None:
            wait_s = min(wait_s, owed_at + LAZY_NOTIFY_S - now)
        return max(0.0, wait_s)

    def _tick(self, wait_s: float) -> bool:
        """One Raft tick (waiting up to ``wait_s`` for a socket) and what follows it; False if
        it failed, which is logged once per burst of failures."""
        journal = self._journal
        try:
            journal.sync_for_ack()
            journal.sync_due()
            self._prevote.before_tick()
            began = monotonic()
            self._sync.doTick(wait_s)
            if monotonic() - began > self._stall_s + wait_s:
                self._forgive_own_stall()
            self._after_tick()
        except Exception:
            self._failures.failed(monotonic())
            return False
        self._failures.succeeded()
        return True

    def _after_tick(self) -> None:
        if self._restored_at is not None and self.applied_index > self._restored_at:
            self._restored_at = None
            forget_restore(self.config.data_dir)
        now = monotonic()
        owed_at = self._notify_owed_at
        if owed_at is not None and now - owed_at >= LAZY_NOTIFY_S:
            self._notify_owed_at = None
            self._post(("notify", None))
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
        self._compact_when_due()

    def _on_state_changed(self, old, new) -> None:
        names = {0: "follower", 1: "candidate", 2: "leader"}
        log.info("role %s -> %s", names.get(old, old), names.get(new, new))
        self._commit_sent = 0  # a new leader's first round always carries its commit index
        self._commit_tell_at = None
        self._status_at = 0.0
        self._post(("notify", None))

    # -- apply (tick thread) ---------------------------------------------------------------

    def _apply_command(self, command: bytes, original: Callable):
        """Apply a committed command: ours from a view of its bytes, any other by pysyncobj.

        pysyncobj slices the type byte off and unpickles, two copies of every job body before
        ``_apply`` decodes the batch; the batch lies whole inside the command's pickle.
        """
        self._tell_commit_first()
        batch = batch_view(command, self._apply_id)
        return original(command) if batch is None else self._apply(batch)

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
                if self.machine.rules_needed:
                    stop_for_newer_rules(f"the log switches to rules version "
                                          f"{self.machine.rules_needed}")
                self.applied_index = index = self._sync.raftLastApplied + 1
            self._observe_time(index)
            self._disk.applied(put_cost(commands))
            if events:
                self._post(("events", events))
            self._notify_applied(bool(events))
            return replies
        except Exception:
            log.exception("state machine failed to apply an entry")
            return None

    def _notify_applied(self, woken: bool) -> None:
        """Tell the loop that an entry was applied: at once where the loop acts on every apply,
        else within ``LAZY_NOTIFY_S`` (``_after_tick``).

        At once: on a lone node (it ticks on the loop anyway), on the leader (its pulse wakes
        for a deadline an entry moved nearer), while the loop waits for an apply
        (``applied_or``), and when events wake the loop anyway. A follower's listeners only
        check for a change of role (notified apart, ``_on_state_changed``) or of this node's
        epoch (rare, and not urgent): waking its loop for every entry the leader commits cost
        each follower a thread hand-off per entry and slowed the whole cluster on shared cores.
        The loop registers a waiter before it looks at the state again (``applied_or``), so a
        waiter never misses an apply.
        """
        if woken or self._single or self._apply_waiters or seam.is_leader(self._sync):
            self._notify_owed_at = None
            self._post(("notify", None))
        elif self._notify_owed_at is None:
            self._notify_owed_at = monotonic()

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

    # -- backups ---------------------------------------------------------------------------

    def take_backup(self):
        """A concurrent future of a ``BackupStream`` of the state at the next tick (any thread).

        Raises BackupBusy while another backup of this node runs; call ``backup_done`` after.
        """
        return self._backups.request()

    def backup_done(self) -> None:
        self._backups.done()
