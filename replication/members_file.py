"""The members file, ``members.json`` in the data directory: who the members are after a restart.

Theory of operation. Each node writes the member list (atomically, after the journal holding the
change is synced) whenever its view changes (``membership.Members``). At start the file decides
the peers: ``--peer`` only seeds a brand-new cluster. A node that was told of its removal writes
``"removed": true`` with the members it leaves behind; it then restarts with all of them as peers
and never campaigns (``standing.py``), rather than as a cluster of its own.
"""

from __future__ import annotations

import json
import logging
import os

from . import forwarding

log = logging.getLogger("beanraft.membership")

MEMBERS_NAME = "members.json"
TEMP_SUFFIX = ".tmp"  # the new list, renamed over the file once synced
FORMAT = 1


class MembershipError(forwarding.Refused):
    """The membership did not change (or its outcome is not known yet); ``code`` says why.
    An unreadable members file is one too (``corrupt``): the node cannot know its members."""


def load_members(directory: str | None) -> list[str] | None:
    """The members persisted in ``directory`` (this node included, unless it was removed), or
    None for a new node."""
    doc = _members_doc(directory)
    return None if doc is None else sorted(doc["members"])


def was_removed(directory: str | None) -> bool:
    """Whether the members file says this node was removed from the cluster."""
    doc = _members_doc(directory)
    return bool(doc and doc.get("removed") is True)


def _members_doc(directory: str | None) -> dict | None:
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
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(members, list) \
            or not all(isinstance(m, str) for m in members):
        raise MembershipError("corrupt", f"{path} is not a BeanRaft members file")
    return doc


def save_members(directory: str, members, removed: bool = False) -> None:
    """Write the member list durably: temporary file, fsync, rename, fsync of the directory."""
    path = os.path.join(directory, MEMBERS_NAME)
    temp = path + TEMP_SUFFIX
    doc = {"format": FORMAT, "members": sorted(members)}
    if removed:
        doc["removed"] = True
    data = json.dumps(doc).encode() + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:  # a short write (a full volume, a signal) is not the whole file
            view = view[os.write(fd, view):]
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
    if was_removed(directory):
        log.warning("this node was removed from the cluster (members: %s): it does not campaign",
                    ", ".join(persisted))
        return [m for m in persisted if m != self_addr], True
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
