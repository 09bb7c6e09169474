"""The composition root of one server process: Raft, group commit, listeners, timers, signals."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import signal
import socket
import sys
import time

from beanraft.jobs.commands import Op
from beanraft.replication.batcher import CLUSTER_INFLIGHT, GroupCommit, OutcomeUnknown
from beanraft.replication.membership import MembershipError, load_members
from beanraft.replication.raft import RaftConfig, RaftNode
from beanraft.replication.standing import MEMBER
from beanraft.replication.transfer import TransferError, transfer_leadership

from beanraft import protocol as p

from . import accept, gcpace, translate
from .config import NodeConfig
from .closes import LingeringCloses
from .connection import ClientConnection
from .principals import Authenticator
from .membership_api import fetch_members, read_members
from .tls import ServerTls

RULES_CHECK_S = 0.25  # how often the leader compares the agreed rules version with the state's

log = logging.getLogger("beanraft.node")

SHUTDOWN_GRACE_S = 3.0
SHUTDOWN_TRANSFER_S = 1.5  # a stopping leader's hand-over, within the launchers' 5 s SIGTERM grace
# A node whose Raft thread has not refreshed its status for this long is not ready.
READY_STALL_S = 1.0
JOIN_REREAD_S = 2.0  # how often a joining node reads the members again from --join


class Node:
    """One BeanRaft server process."""

    def __init__(self, config: NodeConfig):
        config.validate()
        if config.raft and int(config.raft.rpartition(":")[2]) >= 32768:
            # Linux hands out 32768-60999 as ephemeral ports: an outgoing connection can take
            # the raft port while this node is down, and then it cannot bind at restart.
            log.warning("--raft %s is in the ephemeral port range; prefer a port below 32768",
                        config.raft)
        self.config = config
        self.dedup = (config.dedup_window_s, config.dedup_cap)  # carried by every keyed put
        self.name = config.raft if config.clustered else "single"
        self.connections: set[ClientConnection] = set()
        self.lingering = LingeringCloses(self)  # session closes still to commit
        self.sessions: dict[int, ClientConnection] = {}
        self.total_connections = 0
        self.unread = 0  # connections with input received and not yet parsed (connection.py)
        self.cmd_counts: dict[str, int] = {}
        self.draining = False
        self.started_at = time.monotonic()
        self.instance_id = secrets.token_hex(8)
        self.uname = os.uname()
        self.epoch = 0
        self._reregistering = False
        self._sid_counter = 0
        # Sessions of this node's connections waiting in a reserve off the log (a
        # beanraft.client worker's slice, node/connection.py): stats count them as waiting.
        self.unlogged_waiters: set[int] = set()
        self.raft: RaftNode | None = None
        self.commit: GroupCommit | None = None
        self.servers: list[accept.Listener] = []
        self._stopped = asyncio.Event()
        self._pulse_wake = asyncio.Event()
        # What the pulse saw when it last went to sleep: the role, and the cluster time it
        # sleeps until. The apply listener wakes it only when either no longer holds.
        self._pulse_leader = False
        self._pulse_until_ns = 0
        self._tasks: list[asyncio.Task] = []
        # Set at shutdown: the timer loops end by themselves too. Python 3.11's wait_for drops a
        # cancellation that arrives as the awaited event fires, and a loop that lost its
        # cancellation kept asyncio.run from returning after "stopped".
        self._closing = False
        self.http = None
        self.tls = (ServerTls(config.tls_cert, config.tls_key, config.tls_client_ca,
                              config.tls_handshake_timeout_s) if config.tls_cert else None)
        # One mechanism for both ports: the auth file's principals and the admin token's.
        self.auth = (Authenticator(config.auth_file, config.admin_token)
                     if config.auth_file or config.admin_token else None)

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Join (or form) the cluster, register this incarnation, then open the listeners."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        # In a cluster, the Raft tick thread and the event loop hand work to each other for every
        # batch (a lone node ticks on the loop, see replication/raft.py); the default 5 ms GIL
        # switch interval would add up to 5 ms to a commit under load.
        sys.setswitchinterval(0.0005)
        raft_addr = cfg.raft or f"127.0.0.1:{_free_loopback_port(avoid=cfg.port)}"
        peers, joining = list(cfg.peers), False
        if cfg.join and load_members(cfg.data_dir) is None:
            # A new node: start with the cluster's members; it becomes one once added.
            peers, joining = await fetch_members(cfg.join, raft_addr, cfg.admin_token), True
            log.info("joining the cluster of %s (members %s): waiting for 'beanraft member add %s'",
                     cfg.join, ", ".join(peers), raft_addr)
        self.raft = RaftNode(
            RaftConfig(self_addr=raft_addr, peers=peers, join=joining, data_dir=cfg.data_dir,
                       secret=cfg.secret, sync=cfg.sync, timing=cfg.timing,
                       compact_entries=cfg.snapshot_entries,
                       compact_bytes=cfg.snapshot_bytes, max_job_size=p.MAX_JOB_SIZE_LIMIT,
                       max_rules=cfg.max_rules),
            loop, self._on_events)
        self.raft.on_journal_failed = self._journal_failed
        self.raft.add_listener(self._nudge_pulse)
        self.raft.add_listener(self._check_epoch)
        self.raft.start()
        self.commit = GroupCommit(self.raft, commit_timeout_s=cfg.commit_timeout_s,
                                  max_inflight=CLUSTER_INFLIGHT)
        if cfg.http:
            from .http import start_http
            self.http = await start_http(self, cfg.http)
        if joining:
            await self._wait_until_added()
        await self._register()
        await self._switch_rules()  # a lone node leads and agrees alone: before its first client
        await self._listen()
        self._tasks.append(loop.create_task(self._pulse()))
        self._tasks.append(loop.create_task(self._keep_rules()))
        if gcpace.installed():
            self._tasks.append(loop.create_task(self._collect_cycles()))
        if cfg.clustered:
            self._tasks.append(loop.create_task(self._watch_peers()))
        if self.raft.journal_failed():  # it failed before the client port was open
            self._journal_failed()
        log.info("node %s serving clients on %s%s%s (epoch %d)", self.name, self._where(),
                 " with TLS" if self.tls else "",
                 " with authentication" if self.auth is not None and self.auth.required else "",
                 self.epoch)

    async def _wait_until_added(self) -> None:
        """A learner hears from the leader, and could register through it: it serves clients
        only once the entry that adds it reaches its log. Meanwhile it reads the members again
        now and then: one added since it started may be the leader that must reach it."""
        loop = asyncio.get_running_loop()
        next_read, reading = loop.time() + JOIN_REREAD_S, None
        while self.raft.members.standing.state != MEMBER:
            await asyncio.sleep(0.1)
            if reading is not None and reading.done():
                try:
                    members = reading.result()
                except MembershipError as exc:
                    log.debug("joining: %s", exc)
                else:
                    self.raft.members.known_elsewhere.append(members)  # know() skips us
                reading = None
            if reading is None and loop.time() >= next_read:
                next_read = loop.time() + JOIN_REREAD_S
                reading = loop.run_in_executor(None, read_members, self.config.join,
                                               self.config.admin_token)
        if reading is not None:
            reading.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _register(self) -> None:
        """REGISTER: a new epoch for our session ids. Our previous incarnation's sessions end,
        except those a client may resume, which the cluster keeps for ``node_grace_s`` more."""
        grace_ns = int(self.config.node_grace_s * 1e9)
        while True:
            try:
                result = await self.commit.submit((Op.REGISTER, 0, 0, self.name, grace_ns))
            except OutcomeUnknown:
                log.warning("waiting for a leader to register node %s", self.name)
                continue
            if result[0] == "EPOCH":
                self.epoch = result[1]
                return
            raise RuntimeError(f"cannot register node: {result!r}")

    async def _keep_rules(self) -> None:
        """While this node leads, switch the cluster to the rules version every member agrees
        to (replication/rules.py) as soon as it is above the state's."""
        warned = False
        while not self._closing:
            await asyncio.sleep(RULES_CHECK_S)
            try:
                await self._switch_rules()
            except Exception:  # a bug here must not end the checks for good
                log.exception("checking the rules version failed")
            applied, own = self.raft.read(lambda machine: machine.rules), self.raft.rules.own
            if applied > own and not warned:
                warned = True
                log.warning("--max-rules %d is below rules version %d, which the cluster "
                            "already applies: that switch is for good, and a BeanRaft that "
                            "applies only version %d can no longer run this data", own, applied,
                            own)

    async def _switch_rules(self) -> None:
        """Propose RULES(agreed) if this node leads and the state applies less. Not while a
        membership change is pending: a node being added may not have told its version yet."""
        agreed = self.raft.rules.agreed
        if not self.raft.is_leader() or self.raft.members.pending() is not None \
                or agreed <= self.raft.read(lambda machine: machine.rules):
            return
        try:
            result = await self.commit.submit((Op.RULES, 0, 0, agreed))
        except OutcomeUnknown:
            return  # asked again at the next check, by whichever node leads then
        if result == ("RULES", agreed):
            log.info("the cluster applies rules version %d from now on: every member runs a "
                     "BeanRaft that applies it", agreed)
        else:
            log.error("switching to rules version %d failed: %r", agreed, result)

    def _check_epoch(self) -> None:
        """Register again if the cluster retired our epoch (it declared us dead while cut off)."""
        if self.epoch == 0 or self._reregistering:
            return
        live = self.raft.node_epoch(self.name)
        if live != self.epoch:
            log.warning("the cluster ended this node's sessions (epoch %d); registering again",
                        self.epoch)
            for conn in list(self.connections):
                if conn.sid >> 32 == self.epoch:
                    conn.abort()  # their sessions are gone: a blocked reserve would never end
            self._reregistering = True
            task = asyncio.get_running_loop().create_task(self._register())
            task.add_done_callback(lambda _t: setattr(self, "_reregistering", False))
            self._tasks.append(task)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.config.unix_path
        if path is not None:
            if os.path.exists(path) and not _is_socket(path):
                raise OSError(f"{path} exists and is not a socket")
            self.servers.append(accept.listen_unix(loop, path, lambda: ClientConnection(self),
                                                   "client port", self.tls))
        else:
            self.servers += accept.listen_tcp(loop, self.config.listen or None, self.config.port,
                                              lambda: ClientConnection(self), "client port",
                                              self.tls)


    def _where(self) -> str:
        if self.config.unix_path:
            return "unix:" + self.config.unix_path
        return f"{self.config.listen}:{self.config.port}"

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        loop.add_signal_handler(signal.SIGINT, self._stopped.set)
        loop.add_signal_handler(signal.SIGUSR1, self.enter_drain_mode)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self._stopped.wait()
        await self.shutdown()

    def reload(self) -> None:
        """SIGHUP: read the TLS certificates and the auth file again (each keeps its previous
        contents if the new ones do not load)."""
        if self.tls is not None:
            self.tls.reload()
        if self.auth is not None:
            self.auth.reload()

    def _journal_failed(self) -> None:
        """The journal failed a write or an fsync (docs/reference/disk.md). A lone node stays up
        and answers OUT_OF_MEMORY to every change (``refuses``), as beanstalkd does without its
        binlog. A cluster's node is as good as down, and says so to its clients the way a
        stopped node does: it closes its client port and their connections, so that they go on
        through the other nodes; its HTTP port stays up to say why."""
        if not self.config.clustered:
            return
        log.error("journal failed: closing the client port and every client connection (the "
                  "other nodes serve on); restart this node once its disk is fixed or replaced")
        for server in self.servers:
            server.close()
        self._hang_up_clients()

    def _hang_up_clients(self) -> None:
        """Every client connection answers what it has read, then hangs up (``leave``)."""
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.leave()

    def enter_drain_mode(self) -> None:
        if not self.draining:
            log.info("drain mode: put is refused from now on")
        self.draining = True

    async def shutdown(self) -> None:
        """Stop accepting, hand the leadership over, let connections answer what they have
        read and hang up (bounded), stop Raft (which flushes the journal)."""
        log.info("shutting down")
        for server in self.servers:
            server.close()
        if self.config.clustered and self.raft.is_leader():
            await self._hand_over()
        self._hang_up_clients()
        tasks = [c.task for c in self.sessions.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self.lingering.task is not None:
            self.lingering.task.cancel()  # a stopping node's sessions end at its next start
        if self.http is not None:
            await self.http.cleanup()
        if self.config.unix_path and os.path.exists(self.config.unix_path):
            os.unlink(self.config.unix_path)
        self.raft.stop()
        log.info("stopped")

    async def _hand_over(self) -> None:
        """A leader that stops first moves the leadership, so the cluster need not wait out
        an election timeout; meanwhile new commands wait, and then go to the new leader."""
        try:
            done = await transfer_leadership(self.raft, None, SHUTDOWN_TRANSFER_S)
        except TransferError as exc:
            log.warning("stopping without handing over the leadership: %s", exc)
        else:
            log.info("handed the leadership to %s before stopping", done.leader)

    # -- hooks used by connections ---------------------------------------------------------

    def new_sid(self) -> int:
        self._sid_counter += 1
        return (self.epoch << 32) | self._sid_counter

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        self.sessions[conn.sid] = conn
        self.total_connections += 1

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def session_closed(self, conn: ClientConnection) -> None:
        self.sessions.pop(conn.sid, None)

    def count_command(self, req) -> None:
        # A keyed put is a put to anyone reading stats (cmd-put, like total-jobs).
        self.count_name("put" if isinstance(req, p.PutKey) else req.name)

    def count_name(self, name: str | None) -> None:
        if name:
            self.cmd_counts[name] = self.cmd_counts.get(name, 0) + 1

    def waiting_off_the_log(self, sid: int, waiting: bool) -> None:
        if waiting:
            self.unlogged_waiters.add(sid)
        else:
            self.unlogged_waiters.discard(sid)

    def refuses(self, req) -> bool:
        """OUT_OF_MEMORY for ``req``: what beanstalkd answers when its binlog has no room.

        With the disk full, new jobs (put, release with a delay) are refused while everything
        that drains the queue still works; a failed journal refuses every change.
        """
        if self.raft.journal_failed():
            return isinstance(req, translate.PIPELINED)
        if isinstance(req, (p.Put, p.PutKey, p.ImportJob)):
            return not self.raft.admit_job(len(req.body))
        if self.raft.journal_low_space():
            return isinstance(req, p.Release) and req.delay_s > 0
        return False

    def is_ready(self) -> bool:
        """A leader is known, and this node keeps up: its journal has not failed, its Raft thread
        is not stalled and it has applied everything that was committed one status refresh
        (0.1-0.2 s) ago.

        Comparing with the latest commit index instead would flap under load: a follower always
        trails it by the entries of the moment.
        """
        status = self.raft.status
        if self.epoch <= 0 or status.leader is None or self.raft.journal_failed():
            return False
        if self.raft.members.standing.state != MEMBER:
            return False  # removed (or not added yet): it serves the cluster no more
        if self.raft.status_age_s() > READY_STALL_S:
            return False
        applied = max(status.applied_index, self.raft.applied_index)
        return applied >= self.raft.settled_commit_index

    def client_address(self) -> str:
        return self._where()

    async def read_barrier(self) -> None:
        """Reads on a cluster see everything committed anywhere before they began."""
        if self.config.clustered:
            await self.commit.barrier()

    def _on_events(self, events: list) -> None:
        mine = [sid for sid, _ in events if sid in self.sessions]
        if not mine:
            return
        # A thawed node applies a burst of entries before this loop runs. An outcome for a
        # session that no longer exists by now (another connection resumed it) must not reach
        # the old connection, which could take it for a job of its own.
        live = self.raft.read(lambda machine: {sid for sid in mine if sid in machine.sessions})
        for sid, reply in events:
            conn = self.sessions.get(sid)
            if conn is None:
                continue
            if reply[0] == "GONE" or sid not in live:
                # Another connection resumed this session: this one may no longer act on its
                # jobs, so it is closed (docs/reference/extensions.md).
                if reply[0] == "GONE":
                    log.info("session %x was resumed elsewhere: closing its old connection", sid)
                conn.abort()
            else:
                conn.deliver(reply)

    # -- the leader's timer pulse ----------------------------------------------------------

    async def _pulse(self) -> None:
        """On the leader, propose a TICK when the state machine's next deadline passes."""
        while not self._closing:
            timeout = 0.5
            leader = self.raft.is_leader()
            now_ns = self.raft.cluster_now_ns()
            if leader:
                deadline = self.raft.next_deadline_ns()
                if deadline is not None:
                    wait_ns = deadline - now_ns
                    if wait_ns <= 0:
                        await self._tick()
                        continue
                    timeout = min(wait_ns / 1e9, 0.5)
            self._pulse_leader = leader
            self._pulse_until_ns = now_ns + int(timeout * 1e9)
            self._pulse_wake.clear()
            try:
                await asyncio.wait_for(self._pulse_wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _nudge_pulse(self) -> None:
        """Apply listener: wake the pulse if the role changed or a deadline now comes before
        the time it sleeps until; otherwise its own timeout is soon enough (most applied
        batches, such as puts without a delay, change neither)."""
        leader = self.raft.is_leader()
        if leader != self._pulse_leader:
            self._pulse_wake.set()
        elif leader:
            deadline = self.raft.next_deadline_ns()
            if deadline is not None and deadline < self._pulse_until_ns:
                self._pulse_wake.set()

    async def _tick(self) -> None:
        try:
            await self.commit.submit((Op.TICK, 0, 0))
        except OutcomeUnknown:
            await asyncio.sleep(0.05)


    async def _collect_cycles(self) -> None:
        """The full passes of the cycle collector, paced by time and by the connections that
        closed (``gcpace.py``)."""
        def closed() -> int:  # connections closed since the node started
            return self.total_connections - len(self.connections)

        last_at, closed_then = time.monotonic(), closed()
        while not self._closing:
            await asyncio.sleep(min(gcpace.CHECK_EVERY_S, gcpace.FULL_EVERY_S))
            now = time.monotonic()
            if gcpace.time_for_a_pass(now - last_at, closed() - closed_then):
                gcpace.collect()
                last_at, closed_then = now, closed()

    async def _watch_peers(self) -> None:
        """On the leader, end the sessions of a node unreachable for ``node_grace_s``.

        Its clients' reserved jobs go back to ready (their TTR would also expire them, whichever
        comes first). A node that comes back registers a new epoch, so nothing is lost by this.
        """
        grace = self.config.node_grace_s
        last_seen = {peer: time.monotonic() for peer in self.config.peers}
        # The epoch each dropped node had when it was dropped. A node that registered again since
        # (a new epoch) was alive after the drop, even if this loop never saw it connected (a
        # restart killed again within a poll): its new epoch gets a grace and a drop of its own.
        dropped: dict[str, int | None] = {}
        registered: dict[str, float] = {}  # when a dropped node came back under a new epoch
        period = min(0.25, grace / 4)
        previous, resumed = time.monotonic(), -math.inf  # resumed: after this node's own stall
        while not self._closing:
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - previous > grace / 2:
                # This node itself did not run meanwhile (SIGSTOP, a stalled VM, a blocked
                # loop): its peers' silence over that time says nothing about them, and this
                # node may no longer lead without knowing it yet. Each peer gets a fresh grace.
                log.info("this node did not run for %.1f s: its peers get a fresh grace",
                         now - previous - period)
                resumed = now
            previous = now
            leader = self.raft.is_leader()
            for peer in self.raft.status.peers:
                address = peer.address
                epoch = self.raft.node_epoch(address)
                if not leader:
                    last_seen[address] = now
                elif peer.connected:
                    # A frozen or cut-off peer can keep its TCP connection for a long time; what
                    # counts is when it last answered the leader's append_entries. (Waiting for
                    # silence past the grace and only then starting the grace doubled it.)
                    last_seen[address] = now - (peer.silent_s or 0.0)
                if epoch is not None and dropped.get(address, epoch) != epoch:
                    del dropped[address]  # it registered again since we dropped it
                    registered[address] = now  # a grace of its own, until it answers again
                since = max(last_seen.get(address, now), registered.get(address, -math.inf),
                            resumed)
                if now - since <= grace:
                    dropped.pop(address, None)
                elif address not in dropped:
                    dropped[address] = epoch
                    if epoch is None:
                        continue  # it has no sessions to end
                    log.warning("node %s unreachable for %.1f s: releasing its clients' jobs",
                                address, grace)
                    try:
                        await self.commit.submit((Op.DROP_NODE, 0, 0, address, epoch))
                    except OutcomeUnknown:
                        dropped.pop(address, None)


def _free_loopback_port(avoid: int) -> int:
    """An unused loopback port for a single node's private Raft endpoint, never the client port.

    The client listener is bound only after the node has registered through Raft, so the
    kernel could otherwise hand out the very port the clients are to be served on.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != avoid:
            return port


def _is_socket(path: str) -> bool:
    import stat
    return stat.S_ISSOCK(os.stat(path).st_mode)
