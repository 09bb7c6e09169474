"""A node's configuration, validated once at start."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from beanraft.jobs.commands import RULES_SUPPORTED
from beanraft.replication.journal import SyncPolicy
from beanraft.protocol import DEFAULT_MAX_JOB_SIZE, is_decimal
from beanraft.replication.raft import COMPACT_BYTES, COMPACT_ENTRIES, Timing

#: Shown as binlog-max-size in stats, as beanstalkd's -s default.
DEFAULT_BINLOG_MAX_SIZE = 10_485_760
MAX_DEDUP_WINDOW_S = 2**32 - 1  # the state machine's durations are u32 seconds
MAX_DEDUP_CAP = 2**32 - 1


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line for the operator."""


@dataclass
class NodeConfig:
    """Everything ``beanraft serve`` was told."""

    listen: str = "0.0.0.0"
    port: int = 11300
    data_dir: str | None = None
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    max_job_size: int = DEFAULT_MAX_JOB_SIZE
    binlog_max_size: int = DEFAULT_BINLOG_MAX_SIZE
    user: str | None = None
    raft: str | None = None
    peers: list[str] = field(default_factory=list)
    join: str | None = None  # the HTTP address of a member of the cluster this new node joins
    http: str | None = None
    secret: str | None = None
    insecure: bool = False
    timing: Timing = field(default_factory=Timing)
    commit_timeout_s: float = 10.0
    node_grace_s: float = 5.0
    snapshot_entries: int = COMPACT_ENTRIES
    snapshot_bytes: int = COMPACT_BYTES
    dedup_window_s: int = 600
    dedup_cap: int = 100_000
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_handshake_timeout_s: float = 10.0
    admin_token: str | None = None  # bearer token of the mutating HTTP endpoints; None: disabled
    http_read_token_required: bool = False  # the HTTP reads need the admin token too
    auth_file: str | None = None  # principals and their rights (node/principals.py); None: no auth
    peer_http: list[str] = field(default_factory=list)  # the other nodes' HTTP addresses
    max_rules: int = RULES_SUPPORTED  # the highest rules version this node agrees to (rules.py)

    @property
    def unix_path(self) -> str | None:
        return self.listen[5:] if self.listen.startswith("unix:") else None

    @property
    def clustered(self) -> bool:
        # A node with a Raft address may grow into a cluster (beanraft member add).
        return bool(self.peers or self.join or self.raft)

    def validate(self) -> None:
        """Raise ConfigError with a one-line reason for settings that cannot work."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if self.peers and not self.raft:
            raise ConfigError("--peer needs --raft HOST:PORT (this node's own raft address)")
        for address in ([self.raft] if self.raft else []) + self.peers:
            _check_address(address)
        if self.raft and self.raft in self.peers:
            raise ConfigError(f"--peer {self.raft} is this node's own --raft address")
        if len(set(self.peers)) != len(self.peers):
            raise ConfigError("the same --peer is given twice")
        if self.join and not self.raft:
            raise ConfigError("--join needs --raft HOST:PORT (the address the members will add)")
        if self.join:
            _check_address(self.join)
            if not self.admin_token:
                raise ConfigError("--join needs --admin-token-file: the node reads the members "
                                  "from /admin/members with the cluster's admin token")
        if (self.peers or self.join) and not self.secret and not self.insecure:
            raise ConfigError(
                "a cluster needs a shared secret: --cluster-secret-file or BEANRAFT_CLUSTER_SECRET "
                "(generate one with 'beanraft secret'), or --insecure on a trusted network")
        if self.http:
            _check_address(self.http)
        if self.http_read_token_required and not (self.admin_token or self.auth_file):
            raise ConfigError("--http-read-token-required needs --admin-token-file or --auth-file")
        for address in self.peer_http:
            _check_address(address)
        if self.data_dir is not None and os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            raise ConfigError(f"-b {self.data_dir} is not a directory")
        if not 0 < self.dedup_window_s <= MAX_DEDUP_WINDOW_S:
            raise ConfigError(f"--dedup-window must be 1..{MAX_DEDUP_WINDOW_S} seconds")
        if not 0 < self.dedup_cap <= MAX_DEDUP_CAP:
            raise ConfigError(f"--dedup-cap must be 1..{MAX_DEDUP_CAP} keys")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.commit_timeout_s <= self.timing.election_max_s:
            raise ConfigError("the commit timeout must be longer than an election")


def check_private(flag: str, path: str, mode: int) -> None:
    """Refuse a secret or key file that group or others may access, as ssh refuses such a key."""
    if mode & 0o077:
        raise ConfigError(
            f"{flag} {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"whoever can read it can impersonate this cluster. Fix: chmod 600 {path}")


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not is_decimal(port, 5) or not 0 < int(port) <= 65535:
        raise ConfigError(f"{address!r} is not HOST:PORT")
