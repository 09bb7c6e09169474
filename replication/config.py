"""What the Raft host needs to start: its addresses, data directory, secret, timing and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from beanraft.jobs.commands import RULES_SUPPORTED

from .journal import SyncPolicy

#: Snapshot and compact the journal after this many entries or bytes of commands (defaults).
COMPACT_ENTRIES = 50_000
COMPACT_BYTES = 16 * 1024 * 1024
#: A big state waits for a longer journal: a snapshot is asked for only once the journal holds
#: this share of the state's estimated snapshot size too, so the bytes written to snapshots stay
#: within 1 / SNAPSHOT_GROWTH of the bytes of commands (with a fixed threshold, a queue of a
#: million jobs wrote its 187 MB snapshot for every 16 MiB of commands).
SNAPSHOT_GROWTH = 0.5
# pysyncobj's appendEntriesBatchSizeBytes is set above any entry (a batch holds one job of at most
# the job cap and under 1 MiB of others), so it never cuts an entry into its "transmission"
# pieces: peer_link fragments big messages instead.
APPEND_SLACK_BYTES = 4 << 20
UNCAPPED_JOB_BYTES = 1 << 30  # what the append limit assumes when no job cap is given




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
    #: A new node joining a running cluster: ``peers`` are its members, and this node is not one
    #: until the leader has added it (``membership.py``).
    join: bool = False
    #: The highest rules version this node agrees to (``rules.py``); below the code's own, it
    #: holds the cluster at the rules an earlier BeanRaft applies, so a downgrade stays possible.
    max_rules: int = RULES_SUPPORTED
