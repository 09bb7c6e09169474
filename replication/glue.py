"""The pysyncobj glue of the Raft host: the patches installed at import, the pysyncobj object, and
the wrappers a node puts around its transport, its journal and its election deadline.

Every private place touched here is reached through ``seam`` (which checks them at start-up).
"""

from __future__ import annotations

import logging
import socket
import time

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.monotonic import monotonic

from . import peer_link, raft_port, seam
from .datadir import create_journal
from .entries import restamp_command
from .read_index import TYPES as _READ_INDEX_TYPES

log = logging.getLogger("beanraft.raft")

_LEADER = seam.LEADER

seam.install(create_journal=create_journal, listener=raft_port.GuardedListener,
             connection=peer_link.PeerConnection)


def check_bindable(address: str) -> None:
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


def answers_carry_their_term(sync: SyncObj) -> None:
    """A follower's answer to an append_entries says its term; a leader ignores an answer from
    another term (Raft 5.1: a reply of an older term is stale).

    pysyncobj's ``next_node_idx`` answer carries no term, and a leader resets its match index to
    0 when it takes office. An answer that left in an earlier term (held up by a partition, or
    sent to this node when it led before) then counts for the new term: a success raises the
    match index to what the follower held then, which may no longer be the leader's log there,
    and a reset moves the next index anywhere. Answers without a term (a node of an earlier
    BeanRaft) are taken as before.
    """
    transport = seam.transport(sync)
    handler = seam.message_handler(sync)

    def send_with_term(send, node, message):
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            message["term"] = sync.raftCurrentTerm
        return send(node, message)

    def on_message(node, message):
        if (isinstance(message, dict) and message.get("type") == "next_node_idx"
                and message.get("term", sync.raftCurrentTerm) != sync.raftCurrentTerm):
            return
        handler(node, message)

    seam.wrap_send(sync, send_with_term)
    transport.setOnMessageReceivedCallback(on_message)


def truncate_only_on_conflict(sync: SyncObj) -> None:
    """A follower deletes entries from its log only where the leader's log differs (Raft 5.3).

    pysyncobj's follower deletes every entry after an append_entries' ``prevLogIdx`` before it
    adds the message's entries, whether or not they differ from the ones it holds. A message
    that arrives after newer ones (a re-send after a next index reset, a late duplicate) then
    cuts entries the follower already acknowledged: pysyncobj logs CRITICAL "truncating
    already-applied log entries", and the leader, whose match index for the follower does not
    go down, goes on counting the follower for entries it no longer holds when it commits.

    Here the entries the follower already holds with the same term are left out of the message
    before pysyncobj sees it. Entries that differ are still replaced from the first difference
    on, as Raft requires; new entries are added after the follower's last. When the message
    brings nothing new and the follower's log goes further, pysyncobj is given only its term,
    leader and a commit index no further than what the message vouched for (so no entry of an
    unchecked tail is applied), and the follower answers the acknowledgement itself.
    """
    transport = seam.transport(sync)
    handler = seam.message_handler(sync)
    journal = seam.journal(sync)

    def term_at(index) -> int | None:
        if not isinstance(index, int) or not len(journal):
            return None
        position = index - journal[0][1]
        return journal[position][2] if 0 <= position < len(journal) else None

    def on_message(node, message):
        if (isinstance(message, dict) and message.get("type") == "append_entries"
                and "prevLogIdx" in message and "transmission" not in message
                and isinstance(message.get("term"), int)
                and message["term"] >= sync.raftCurrentTerm):
            prev = message["prevLogIdx"]
            if prev is not None and term_at(prev) == message.get("prevLogTerm"):
                message, vouched = _left_to_add(message, prev, journal[-1][1], term_at)
                if vouched is not None:  # the follower's log goes past it: kept whole
                    handler(node, message)
                    transport.send(node, {"type": "next_node_idx", "next_node_idx": vouched + 1,
                                          "reset": False, "success": True})
                    return
        handler(node, message)

    transport.setOnMessageReceivedCallback(on_message)


def _left_to_add(message: dict, prev: int, last: int, term_at) -> tuple[dict, int | None]:
    """``message`` without the entries the follower holds (its log matches up to ``prev``).

    Returns the message for pysyncobj and None, or, when the follower's log goes past the last
    index the message vouches for, a bare heartbeat for pysyncobj and that index.
    """
    entries = message.get("entries") or []
    held = 0
    for entry in entries:
        if entry[1] > last or term_at(entry[1]) != entry[2]:
            break
        held += 1
    if held < len(entries):  # a difference, or entries after the follower's last
        if not held:
            return message, None
        before = entries[held - 1]
        return {**message, "prevLogIdx": before[1], "prevLogTerm": before[2],
                "entries": entries[held:]}, None
    vouched = entries[-1][1] if entries else prev
    if vouched == last:  # nothing new and nothing after: a heartbeat at the follower's last
        return {**message, "prevLogIdx": last, "prevLogTerm": term_at(last), "entries": []}, None
    commit = message.get("commit_index")
    return {"type": "append_entries", "term": message["term"],
            "commit_index": min(commit, vouched) if isinstance(commit, int) else vouched}, vouched


class Host(SyncObj):
    """The pysyncobj object. It holds no replicated attributes of its own."""

    def __init__(self, owner, self_addr: str, peers: list[str], conf: SyncObjConf):
        self._owner = owner  # set before SyncObj.__init__: kept out of pysyncobj's own state
        super().__init__(self_addr, peers, conf)

    @replicated
    def apply_entry(self, entry: bytes):
        return self._owner._apply(entry)




class PysyncobjGlue:
    """The RaftNode's wrappers around pysyncobj (a mixin: they use the node's attributes)."""

    def _wrap_transport(self) -> None:
        """A follower's acknowledgement leaves only after the entries it acknowledges are on disk.

        The leader's own entries need no fsync before they are sent: it counts itself towards a
        commit only at the start of its next tick, and ``_run_ticks`` syncs the journal right
        before every tick. So the leader's fsync and its followers' run at the same time.

        An append_entries that brought no entries (the leader's commit index, a heartbeat) is
        answered only if the follower has not answered its leader for half a heartbeat period.
        pysyncobj answers every one, yet such an answer tells the leader nothing it does not
        know (it knows what it sent, and the follower's acknowledgement of those entries went
        out before): it only says "alive", which the leader needs once per heartbeat period
        (``leaderFallbackTimeout``, ``silent_s`` in /status). Each commit thus costs two messages
        fewer in a cluster of three, and the follower that waits for the commit index to reply
        to its client applies it without sending first. Refusals (``success`` false) and the
        acknowledgements of entries always leave.
        """
        journal = self._journal
        conf = self._sync.conf
        empty_append = [False]  # True while pysyncobj handles an append_entries without entries
        answered_at: dict = {}  # node -> monotonic time this node last answered it

        def send_after_sync(send, node, message):
            if isinstance(message, dict) and message.get("type") == "apply_command_response":
                # The leader appended a follower's forwarded batch at this index: the
                # follower's clients wait for its commit (commit_tell._commit_urgent).
                index = message.get("log_idx")
                if isinstance(index, int) and index > self._forwarded_upto:
                    self._forwarded_upto = index
            elif isinstance(message, dict) and message.get("type") == "next_node_idx":
                now = monotonic()
                if (empty_append[0] and message.get("success") and not message.get("reset")
                        and now - answered_at.get(node, float("-inf")) < conf.appendEntriesPeriod / 2):
                    return True
                journal.sync_for_ack()
                answered_at[node] = now
            return send(node, message)

        seam.wrap_send(self._sync, send_after_sync)
        handler = seam.message_handler(self._sync)

        def on_message(node, message):
            if (isinstance(message, dict) and message.get("type") == "append_entries"
                    and "prevLogIdx" in message and not message.get("entries")
                    and "transmission" not in message):
                empty_append[0] = True
                try:
                    handler(node, message)
                finally:
                    empty_append[0] = False
                return
            handler(node, message)

        seam.transport(self._sync).setOnMessageReceivedCallback(on_message)

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
            at = None
            if seam.role(sync) == _LEADER:
                try:
                    command = restamp_command(command, stamp)
                    at = clock.stamped_at_ns
                except Exception as exc:  # never break the tick: apply_batch copes with any time
                    log.error("cannot stamp log entry %d: %s", idx, exc)
            add(command, idx, term)
            # The leader's timeline goes on from the instant its stamp stands for: from after
            # the journal's write instead, it fell behind by that write at every entry.
            appended_at[idx] = time.monotonic_ns() if at is None else at

        journal.add = add_stamped

    def _send_only_what_is_new(self) -> None:
        """The leader sends an append_entries round only when it carries something new, and a
        new commit index alone only when a follower needs it now (``commit_tell._commit_news_due``).

        pysyncobj's leader (``appendEntriesUseBatch=False``) sends a round after every tick that
        applied entries, to carry the new commit index. ``_tell_commit_first`` sends that index
        as the apply begins when a follower waits for it, so the second round only repeated it,
        and every follower answered it: four more messages per commit in a cluster of three,
        each one waking a process on cores the nodes share, on the path of the next command. A
        round now goes out when a connected node lacks entries (or a snapshot), when a heartbeat
        is due, or when the commit index moved since the last round and the followers need it:
        at once if one waits for it, else once ``COMMIT_TELL_WITHIN_S`` (``commit_tell.py``) has
        passed without another round to carry it.
        """
        sync = self._sync
        journal = self._journal
        next_index = seam.next_index(sync)
        connected = seam.connected_nodes(sync)
        conf = sync.conf
        last_round = [float("-inf")]

        def wanted() -> bool:
            now = monotonic()
            commit = sync.raftCommitIndex
            news = commit > self._commit_sent and self._commit_news_due(now)
            if not news and now < last_round[0] + conf.appendEntriesPeriod:
                last = journal[-1][1] if len(journal) else 0
                if all(next_index.get(node, 0) > last for node in connected):
                    return False
            self._commit_sent = commit
            self._commit_tell_at = None
            last_round[0] = now
            return True

        seam.filter_append_entries(sync, wanted)

    def _keep_next_index_monotonic(self) -> None:
        keep_next_index_monotonic(self._sync)

    def _truncate_only_on_conflict(self) -> None:
        truncate_only_on_conflict(self._sync)

    def _answers_carry_their_term(self) -> None:
        answers_carry_their_term(self._sync)

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

    def _forgive_own_stall(self) -> None:
        """After a long tick (a snapshot, a burst of applies, a starved thread), read first.

        pysyncobj checks a follower's election deadline at the start of a tick, before it polls
        its sockets. After this node itself stalled, the leader's heartbeats are waiting unread
        in the socket, yet the deadline has passed: the node would give up on its leader and
        ask for pre-votes (``prevote.py``), which the others refuse while they hear from it.
        Our own stall is no evidence that the leader failed: give the next tick a chance to read
        those heartbeats first.
        """
        sync = self._sync
        if seam.role(sync) == seam.FOLLOWER:
            grace = monotonic() + 2 * self.config.timing.heartbeat_s
            if seam.election_deadline(sync) < grace:
                seam.set_election_deadline(sync, grace)

    def _hold_first_campaign(self) -> None:
        """A restarted member lets its leader find it before it may campaign (tick thread).

        A member that restarts (in a rolling restart, say) and whose election timeout runs out
        before the leader's first append_entries reaches it, which a busy machine's start-up and
        the leader's reconnect delay make likely, would ask for pre-votes, which the others
        refuse while they hear from the leader (without pre-vote, it deposed the leader). So
        that it does not even ask, a node that has been a member before (its term is above 0)
        keeps its election deadline ahead until it has heard from a leader, or
        ``_campaign_hold_until`` passes (a cluster restarted as a whole then elects its leader
        that much later). A new, empty node campaigns as before.
        """
        until = self._campaign_hold_until
        if until is None:
            return
        sync = self._sync
        now = monotonic()
        if seam.leader_node(sync) is not None or now > until or seam.role(sync) != seam.FOLLOWER:
            self._campaign_hold_until = None
            return
        deadline = now + self.config.timing.election_min_s
        if seam.election_deadline(sync) < deadline:
            seam.set_election_deadline(sync, deadline)

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
        self._prevote.heard_from_leader()
        deadline = monotonic() + self.config.timing.election_min_s
        if seam.election_deadline(sync) < deadline:
            seam.set_election_deadline(sync, deadline)
