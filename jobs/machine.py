"""The job state machine: beanstalkd 1.12 minus sockets, deterministic, replicated by Raft.

Theory of operation
-------------------
``Machine.apply_batch(now_ns, commands)`` is the only way state changes. It

1. fires every timer due by ``max(now, now_ns)``, earliest first (state.py says how ties
   break), stepping the clock to each timer's own time and serving waiting sessions after
   each one — exactly what a server ticking at every deadline would have done;
2. sets the clock to ``max(now, now_ns)`` (time never goes backwards);
3. applies the commands in order, serving waiting sessions after each one.

Because of step 1 the outcome does not depend on when, or whether, the leader proposed TICKs
between two commands: only the commands and their timestamps matter.

It returns one reply per command and the ``events``: replies owed to other sessions whose
reserve was waiting, in the order they were resolved.

Nothing here reads a clock, draws a random number or iterates a set, so replicas that apply the
same batches end in identical state. No input raises: malformed commands, unknown sessions and
commands that cannot apply are answered with ``("ERROR", text)`` or ``("GONE",)`` before any
state changes.

Exactly-once: a session command with ``seq > 0`` has its reply cached (the last 64 per session,
the lowest seq pruned first). A retry of a cached seq returns the cached reply without running
again; a retry of an already pruned seq (at or below the session's ``seq_floor``) is refused.

Extensions: resumable sessions and keyed puts live in extensions.py; the admin commands (purge a
tube, move jobs, list a tube's jobs) in admin.py.

Cluster rules: a sid is ``(epoch << 32) | counter``. NODE_START gives a node a new epoch and
closes the sessions of its previous one; DROP_NODE(node, epoch) closes them and retires the
epoch, if that epoch is still the node's live one. OPEN only
succeeds for a live epoch, so a late OPEN from a dead incarnation cannot create a session that
nobody would ever close. (Counters are not required to grow: a node proposes a connection's
OPEN as it connects, and a batch that failed to commit is proposed again after later ones, so
OPENs of one epoch can arrive in any order.)

Detached sessions. REGISTER(node, grace_ns) is NODE_START for a node that may come back before
the cluster dropped it: of its previous epoch's sessions, those that hold a token (a client may
resume them, extensions.py) are *detached* instead of closed. A detached session keeps its
reservations (their TTR keeps running) and its token until ``now + grace_ns`` on the cluster's
clock, when a replicated timer closes it like a CLOSE; a RESUME before that takes it over as
usual. It accepts no command of its own (GONE): no connection carries it any more. Sessions
without a token have nobody to come back for them and close at once, as NODE_START does.
DROP_NODE closes at once too: its proposer already waited the grace.

Rules versions. Every replica must apply the same log by the same rules, so a rule that a newer
BeanRaft changes cannot take effect when a node is upgraded: during a rolling upgrade the nodes
not yet upgraded would go on applying the old rule to the same entries. The rules therefore
have a version in the replicated state (``rules``: 1 at the start of every log) that changes
only at a RULES(n) entry, at the same index on every replica; the replication layer proposes
it once every member runs code that applies ``n`` (replication/rules.py). RULES never lowers
the version. Version 2 serves waiting workers as beanstalkd 1.12 does in three cases where
version 1 did not (handlers.py: ``kick``, ``close``, ``reserve``), and snapshots of a version-2
state keep the order in which each session reserved its jobs (snapshot.py). Version 3 ends
timers that end at the same time in the order they were set, as 1.12 does (state.py, ``order``),
and its snapshots keep that order (snapshot.py); it also adds END_WAIT, which ends the wait of
a session whose client half-closed and leaves the session open (handlers.py, ``end_wait``), an
unknown op before it. A RULES above
``RULES_SUPPORTED`` is answered ERROR and recorded in ``rules_needed``: this code cannot apply
what follows it, and the replication layer stops the node rather than let it diverge.
"""

from __future__ import annotations

from . import admin, extensions, handlers, queries, snapshot
from .commands import (
    ERROR_WAITING, GONE, OK, OPS, REPLY_CACHE_SIZE, RULES_SUPPORTED, SESSIONLESS, WAITING, Op,
    check, is_time,
)
from .model import Session
from .state import T_DELAY, T_DETACH, T_PAUSE, T_TTR, State
from .waiting import serve, stop_wait, wake

# One dispatch table: beanstalkd's commands, then the extensions and the admin commands.
_HANDLERS = {**handlers.HANDLERS, **extensions.HANDLERS, **admin.HANDLERS}
# The ops that every command is compared with, read once: ``Op.X`` costs a class lookup each time.
_OPEN, _CLOSE, _END_WAIT = Op.OPEN, Op.CLOSE, Op.END_WAIT


class Machine(State):
    """The replicated job state machine (see the module docstring)."""

    # ------------------------------------------------------------ applying

    def apply_batch(self, now_ns: int, commands: list[tuple]) -> tuple[list[tuple], list]:
        """Advance time to ``now_ns``, fire due timers, apply ``commands`` in order.

        Returns ``(replies, events)``: one reply per command, and ``(sid, reply)`` pairs owed
        to waiting sessions, in the order they happened.
        """
        if not isinstance(commands, (list, tuple)):
            return [], []
        if not is_time(now_ns):
            return [("ERROR", "now_ns must be an integer in [0, 2**62]")] * len(commands), []
        self.events = events = []
        self._fire_timers(max(self.now_ns, now_ns))
        self.now_ns = max(self.now_ns, now_ns)
        replies = []
        for command in commands:
            replies.append(self._apply(command))
            serve(self)
        self.events = []
        return replies, events

    def _fire_timers(self, until_ns: int) -> None:
        while True:
            entry = self.next_timer()
            if entry is None or entry[0] > until_ns:
                return
            self.pop_timer()
            fire_ns, kind, _, key, _ = entry
            # Every timer is armed strictly in the future, so this never moves time backwards.
            self.now_ns = max(self.now_ns, fire_ns)
            if kind == T_DELAY:
                self.make_ready(self.jobs[key])
            elif kind == T_TTR:
                self.expire(self.jobs[key])
            elif kind == T_PAUSE:
                self.unpause(self.tubes[key])
            elif kind == T_DETACH:
                handlers.close(self, self.sessions[key])  # its grace is over: nobody resumed it
            else:
                wake(self, self.waiting[key])
            serve(self)

    def _apply(self, command: object) -> tuple:
        error = check(command, self.max_job_size)
        if error is not None:
            return ("ERROR", error)
        op, sid, seq, *args = command
        op = OPS[op]
        if op in SESSIONLESS:
            return self._cluster_command(op, args)
        if op is _END_WAIT and self.rules < 3:
            return ("ERROR", "unknown op")  # as the code before version 3 answers it
        session = self.sessions.get(sid)
        if op is _OPEN and session is None:
            return self._open(sid, seq)
        if session is None or (self.detached and sid in self.detached):
            return GONE
        if seq:
            cached = session.replies.get(seq)
            if cached is not None:
                return cached
            if seq <= session.seq_floor:
                return ("ERROR", "seq already forgotten; the command may have been applied")
        if op is _OPEN:
            return ("ERROR", "session already open")
        if session.wait_ticket and op is not _CLOSE and op is not _END_WAIT:
            return ERROR_WAITING
        reply = _HANDLERS[op](self, session, *args)
        if seq and op is not _CLOSE:
            self._remember(session, seq, reply)
            if reply is WAITING:
                session.wait_seq = seq  # finish_wait replaces the cached reply by the outcome
        return reply

    @staticmethod
    def _remember(session: Session, seq: int, reply: tuple) -> None:
        # The cache is kept in ascending seq order (a snapshot restores it sorted), so its
        # lowest seq is its first key: no scan of the cache per command.
        replies = session.replies
        if replies and seq < next(reversed(replies)):
            replies[seq] = reply
            session.replies = replies = dict(sorted(replies.items()))  # rare: out of order
        else:
            replies[seq] = reply
        if len(replies) > REPLY_CACHE_SIZE:
            oldest = next(iter(replies))
            del replies[oldest]
            session.seq_floor = max(session.seq_floor, oldest)

    # -------------------------------------------------- sessions and nodes

    def _open(self, sid: int, seq: int) -> tuple:
        if (sid >> 32) not in self.epochs:
            return GONE
        default = self.tubes["default"]
        default.using_ct += 1
        default.watching_ct += 1
        session = self.sessions[sid] = Session(sid, default)
        if seq:
            self._remember(session, seq, OK)
        return OK

    def _cluster_command(self, op: Op, args: list) -> tuple:
        if op == Op.TICK:
            return OK
        if op == Op.RULES:
            return self._switch_rules(args[0])
        node = args[0]
        if op == Op.NODE_START or op == Op.REGISTER:
            self._retire(node, args[1] if op == Op.REGISTER else 0)
            epoch = self.next_epoch
            self.next_epoch += 1
            self.epochs[epoch] = node
            self.node_epoch[node] = epoch
            return ("EPOCH", epoch)
        # DROP_NODE names the epoch its proposer saw, so a drop decided before the node came
        # back and registered again cannot end the new incarnation's sessions.
        if self.node_epoch.get(node) == args[1]:
            self._retire(node)
        return OK

    def _switch_rules(self, version: int) -> tuple:
        if version > RULES_SUPPORTED:
            self.rules_needed = max(self.rules_needed, version)
            return ("ERROR", f"rules version {version} is above {RULES_SUPPORTED}, the highest "
                    "this code applies")
        if self.rules < 2 <= version:
            # Under rules 1 a snapshot did not keep the order each session reserved its jobs
            # in: a replica restored from one holds them in id order, one that replayed the
            # log in the order of the reserves. From rules 2 that order decides what a close
            # hands out first, so every replica starts from the same one: the restored one.
            for session in self.sessions.values():
                session.reserved = dict.fromkeys(sorted(session.reserved))
        # The switch to 3 changes nothing already set: every timer keeps order 0, which a
        # replica restored from a snapshot of rules 2 (it keeps no order) gives them too, and
        # which ends them, at equal times, before every timer set from now on, as set.
        self.rules = max(self.rules, version)
        return ("RULES", self.rules)

    def _retire(self, node: str, grace_ns: int = 0) -> None:
        """Close every session of ``node``'s live epoch and retire that epoch; with a grace,
        detach the sessions that hold a token instead (see the module docstring)."""
        sids = self.sessions_of(node)
        _stop_waits(self, sids)
        for sid in sids:
            session = self.sessions[sid]
            if grace_ns and session.token is not None:
                self.detach(sid, self.now_ns + grace_ns)
            else:
                handlers.close(self, session)
        epoch = self.node_epoch.pop(node, None)
        if epoch is not None:
            del self.epochs[epoch]

    def retire_all(self) -> None:
        """End every session and retire every epoch, as if every node had gone (a restore)."""
        _stop_waits(self, sorted(self.sessions))
        for node in sorted(self.node_epoch):
            self._retire(node)
        for sid in sorted(self.detached):  # kept for a grace after their node restarted
            handlers.close(self, self.sessions[sid])
        self.events.clear()

    def sessions_of(self, node_name: str) -> list[int]:
        """The open sessions of ``node_name``'s live epoch, in sid order."""
        epoch = self.node_epoch.get(node_name) if isinstance(node_name, str) else None
        if epoch is None:
            return []
        return sorted(sid for sid in self.sessions
                      if sid >> 32 == epoch and sid not in self.detached)

    # ------------------------------------------------------------ queries

    peek = queries.peek
    peek_ready = queries.peek_ready
    peek_delayed = queries.peek_delayed
    peek_buried = queries.peek_buried
    stats_job = queries.stats_job
    stats_tube = queries.stats_tube
    stats_global = queries.stats_global
    list_tubes = queries.list_tubes
    list_tube_used = queries.list_tube_used
    list_tubes_watched = queries.list_tubes_watched
    job_counts = queries.job_counts
    job_owner = queries.job_owner
    next_deadline_ns = queries.next_deadline_ns
    is_waiting = queries.is_waiting
    reserve_would_wait = queries.reserve_would_wait
    list_jobs = admin.list_jobs

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The canonical encoding of all replicated state (snapshot.py)."""
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes) -> Machine:
        """A machine in the state ``snapshot`` captured; ValueError if ``data`` is not one."""
        return snapshot.load(data, cls)

    def digest(self) -> str:
        """sha256 hex digest of the snapshot: equal digests mean equal replicated state."""
        return snapshot.digest(self)


def _stop_waits(state: State, sids: list[int]) -> None:
    """End the waits of the sessions ``sids``, which one command is about to close or detach.

    Before any of them is closed: under rules 2 a close serves waiters after each job it hands
    back, and a session ended by the same command must not take one (its reply would reach
    nobody, and the job would count a reserve or, detached, sit reserved until its TTR ran out).
    Under rules 1 waiters were served after the whole command, when these had already gone.
    """
    for sid in sids:
        session = state.sessions[sid]
        if session.wait_ticket:
            stop_wait(state, session)
