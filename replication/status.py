"""A typed copy of pysyncobj's status dict, made once here and read everywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field

from pysyncobj.monotonic import monotonic

from . import seam

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}


@dataclass(frozen=True)
class PeerStatus:
    """One other member of the cluster as this node sees it."""

    address: str
    connected: bool
    match_index: int | None = None
    silent_s: float | None = None  # on the leader: seconds since this peer last answered


@dataclass(frozen=True)
class RaftStatus:
    """This node's Raft view: role, leader, term, indices and peers."""

    node: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    leader_commit_index: int | None
    log_entries: int
    peers: tuple[PeerStatus, ...] = field(default_factory=tuple)

    @classmethod
    def empty(cls, node: str) -> "RaftStatus":
        return cls(node=node, role="follower", leader=None, term=0, commit_index=0,
                   applied_index=0, leader_commit_index=None, log_entries=0)

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "role": self.role,
            "leader": self.leader,
            "term": self.term,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "peers": [
                {"address": p.address, "connected": p.connected, "match_index": p.match_index,
                 "silent_s": p.silent_s}
                for p in self.peers
            ],
        }


def read_status(sync, applied_index: int) -> RaftStatus:
    """Convert ``sync.getStatus()``; must run in the tick thread (it iterates pysyncobj dicts)."""
    raw = sync.getStatus()
    leader = raw.get("leader")
    leading = raw["state"] == 2
    answered = {str(node): at for node, at in seam.last_response_times(sync).items()}
    now = monotonic()
    peers = []
    prefix = "partner_node_status_server_"
    for key in sorted(raw):
        if key.startswith(prefix):
            address = key[len(prefix):]
            at = answered.get(address) if leading else None
            peers.append(PeerStatus(
                address=address,
                connected=raw[key] == 2,
                match_index=raw.get("match_idx_server_" + address),
                silent_s=round(now - at, 3) if at is not None else None,
            ))
    leader = str(leader) if leader is not None else None
    if leader is not None and leader != str(raw["self"]):
        # pysyncobj only starts an election while connected to someone, so a follower cut off
        # from every peer keeps naming its old leader forever. Report a leader only while our
        # link to it is up; otherwise /readyz would say 200 on a node that cannot commit.
        if not any(p.address == leader and p.connected for p in peers):
            leader = None
    return RaftStatus(
        node=str(raw["self"]),
        role=_ROLES.get(raw["state"], str(raw["state"])),
        leader=leader,
        term=raw["raft_term"],
        commit_index=raw["commit_idx"],
        applied_index=max(applied_index, raw["last_applied"]),
        leader_commit_index=raw.get("leader_commit_idx"),
        log_entries=raw["log_len"],
        peers=tuple(peers),
    )
