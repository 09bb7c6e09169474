"""Answers to read-only requests: peeks, stats, tube lists and list-jobs (admin extension).

Replicated figures come from the state machine (through ``RaftNode.read``, after a read barrier
on a multi-node cluster); node-local figures (connections, cmd-* counters, pid, uptime, rusage) come
from this process, as documented in docs/reference/compatibility.md.
"""

from __future__ import annotations

import os
import resource
import time

from beanraft import protocol as p
from beanraft.jobs.queries import UNOPENED

from .translate import to_reply


#: BeanRaft's own commands. A connection that has sent one of them knows it talks to BeanRaft,
#: and its ``stats`` ends with their ``cmd-*`` counters (``EXTENSION_CMD_KEYS``); every other
#: connection gets beanstalkd 1.12's keys only. A keyed put counts in ``cmd-put``.
EXTENSIONS = (p.PutKey, p.SessionId, p.SessionResume, *p.ADMIN_REQUEST_TYPES)
EXTENSION_CMD_KEYS = tuple(f"cmd-{kind.name}" for kind in EXTENSIONS if kind is not p.PutKey)


def answer_read(node, conn, req):
    """The reply to one read-only request, computed from local state."""
    raft = node.raft
    sid = UNOPENED if getattr(conn, "unopened", False) else conn.sid
    replicated = raft.read(lambda machine: _query(machine, raft.cluster_now_ns(), sid, req,
                                                  node.unlogged_waiters))
    if type(req) is p.Stats:
        pairs = server_stats(node, replicated)
        if getattr(conn, "extended", False):
            pairs += [(key, node.cmd_counts.get(key[4:], 0)) for key in EXTENSION_CMD_KEYS]
        return p.Ok(p.yaml_mapping(pairs))
    return replicated


def _query(machine, now_ns: int, sid: int, req, unlogged_waiters=()):
    """Runs under the state lock: the reply to ``req`` (for ``stats``, the replicated figures).

    ``unlogged_waiters``: this node's sessions waiting in a reserve off the log; they count in
    ``current-waiting`` like the waits the replicated state holds."""
    kind = type(req)
    if kind is p.Peek:
        return to_reply(machine.peek(req.job_id))
    if kind is p.PeekReady:
        return to_reply(machine.peek_ready(sid))
    if kind is p.PeekDelayed:
        return to_reply(machine.peek_delayed(sid))
    if kind is p.PeekBuried:
        return to_reply(machine.peek_buried(sid))
    if kind is p.StatsJob:
        fields = machine.stats_job(req.job_id, now_ns)
        return p.NotFound() if fields is None else p.Ok(p.yaml_mapping(fields))
    if kind is p.StatsTube:
        fields = machine.stats_tube(req.tube, now_ns, unlogged_waiters)
        return p.NotFound() if fields is None else p.Ok(p.yaml_mapping(fields))
    if kind is p.ListTubes:
        return p.Ok(p.yaml_list(machine.list_tubes()))
    if kind is p.ListTubeUsed:
        return p.Using(machine.list_tube_used(sid))
    if kind is p.ListTubesWatched:
        return p.Ok(p.yaml_list(machine.list_tubes_watched(sid)))
    if kind is p.Stats:
        return machine.stats_global(unlogged_waiters)
    if kind is p.ListJobs:
        records = machine.list_jobs(req.tube, req.state, req.offset, req.limit, now_ns)
        return p.NotFound() if records is None else p.Ok(p.yaml_records(records))
    return p.InternalError()


def server_stats(node, replicated: dict) -> list[tuple[str, int | str | bool]]:
    """The ``stats`` fields in beanstalkd 1.12's order."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    local = {
        "max-job-size": node.config.max_job_size,
        "current-connections": len(node.connections),
        "current-producers": sum(1 for c in node.connections if c.producer),
        "current-workers": sum(1 for c in node.connections if c.worker),
        "total-connections": node.total_connections,
        "pid": os.getpid(),
        "version": '"1.12"',
        "rusage-utime": _seconds(usage.ru_utime),
        "rusage-stime": _seconds(usage.ru_stime),
        "uptime": int(time.monotonic() - node.started_at),
        "binlog-oldest-index": 0,
        "binlog-current-index": 0,
        "binlog-records-migrated": 0,
        "binlog-records-written": 0,
        "binlog-max-size": node.config.binlog_max_size,
        "draining": node.draining,
        "id": node.instance_id,
        "hostname": _quote(node.uname.nodename),
        "os": _quote(node.uname.version),
        "platform": _quote(node.uname.machine),
    }
    pairs = []
    for key in p.STATS_KEYS:
        if key.startswith("cmd-"):
            pairs.append((key, node.cmd_counts.get(key[4:], 0)))
        elif key in replicated:
            pairs.append((key, replicated[key]))
        else:
            pairs.append((key, local[key]))
    return pairs


def _seconds(value: float) -> str:
    micros = int(round(value * 1_000_000))
    return "%d.%06d" % divmod(micros, 1_000_000)


def _quote(text: str) -> str:
    """1.12 prints these unquoted, which is not YAML when they contain '#'; we quote (see §13)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
