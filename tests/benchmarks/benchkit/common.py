"""Limits, workload names, errors and the Result of one (target, workload) row."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# HOST is imported from here by the other bench modules.
from beanraft.node.launcher import HOST, STOP_GRACE_S  # noqa: F401

DEFAULT_BEANSTALKD = "/usr/bin/beanstalkd"
READY_TIMEOUT = 20.0  # a server must answer `list-tube-used` within this
LEADER_TIMEOUT = 20.0  # a cluster must report a leader within this (after ready)
STOP_TIMEOUT = STOP_GRACE_S  # SIGTERM -> SIGKILL grace period, as every launcher of nodes waits
CONNECT_TIMEOUT = 10.0  # opening all load connections
IO_TIMEOUT = 10.0  # any single reply
MAX_LINE = 1 << 20  # a reply line longer than this is a protocol error
MAX_OPS_DEFAULT = 5_000_000  # per workload, on top of the time cap
MAX_PRELOAD_DEFAULT = 2_000_000
TTR = 120

WORKLOADS = [
    # key, table label
    ("put", "put pipelined"),
    ("rd", "reserve+delete pipelined"),
    ("put1", "put 1-at-a-time"),
    ("rd1", "reserve+delete 1-at-a-time"),
]
WORKLOAD_LABEL = dict(WORKLOADS)
WORKLOAD_LABEL["all"] = "(all workloads)"
TARGET_CHOICES = ("beanstalkd", "beanstalkd-b", "beanstalkd-mem", "beanraft", "cluster")

perf = time.perf_counter


class BenchError(Exception):
    """A workload could not be measured (protocol error, timeout, ...)."""


class TargetFailed(Exception):
    """A target could not be started."""



@dataclass
class Result:
    target: str
    workload: str
    ok: bool = True
    error: str = ""
    ops: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    server_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    error_replies: int = 0
    first_error_reply: str = ""
    notes: list[str] = field(default_factory=list)
    rounds: int = 1

