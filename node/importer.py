"""``beanraft import-binlog DIR --to NODE``: load a stopped beanstalkd's jobs into a cluster.

Theory of operation
-------------------
1. Read and check the whole binlog first (``binlog.read_binlog``), and every delayed job's time
   left against a delay's range (``check_delays``): a binlog that cannot be read to its end, or
   holds a job no ``import-job`` can carry, imports nothing.
2. Check the node: it must answer ``list-jobs`` (a plain beanstalkd answers UNKNOWN_COMMAND,
   and would read an ``import-job`` body as a command), and every body must fit its
   ``max-job-size``. Both are checked before the first job is sent.
3. Send one ``import-job`` per job, in the order beanstalkd first saw them, after a ``use`` of
   its tube, pipelined in windows of ``WINDOW`` requests. Each job is created directly in its
   state (a buried job is never ready, not even for a moment) with the key
   ``binlog:<id>.<created_at>``: the cluster remembers the key like a put-key key, so a re-run
   answers ``EXISTS`` for the jobs already imported and creates only the rest.
4. Report what was done. If the node fails or refuses part-way, the report says exactly which
   jobs were imported, which were not, and which are unknown (sent, no reply); running the same
   command again completes the import without duplicates while the keys are remembered.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import click

from beanraft import protocol as p

from .admin_wire import (EXIT_BAD_BINLOG, EXIT_REFUSED, EXIT_TOO_BIG, AdminConnection,
                         AdminError, PipelineBroken, credentials, error_of, parse_yaml,
                         tls_context)
from .binlog import Binlog, BinlogError, BinlogJob, read_binlog

#: Requests sent before their replies are read: bounds what a failure leaves unknown.
WINDOW = 64
MAX_DELAY_S = 2**32 - 1  # import-job's delay, like put's, is a u32 of seconds


@dataclass
class Outcome:
    """What happened to each binlog job: new BeanRaft id, already imported, failed or unknown."""

    imported: dict[int, int] = field(default_factory=dict)   # beanstalkd id -> BeanRaft id
    existing: dict[int, int] = field(default_factory=dict)   # imported by an earlier run
    unknown: list[int] = field(default_factory=list)         # sent, reply never came
    error: AdminError | None = None

    def report(self, jobs: list[BinlogJob], now_ns: int) -> dict:
        done = {**self.imported, **self.existing}
        states: dict[str, int] = {}
        for job in jobs:
            if job.id in self.imported:
                state = job.state_at(now_ns)
                states[state] = states.get(state, 0) + 1
        return {
            "jobs": len(jobs), "imported": len(self.imported), "already_imported": len(self.existing),
            "not_imported": [job.id for job in jobs if job.id not in done
                             and job.id not in self.unknown],
            "unknown": list(self.unknown), "states": states,
            "ids": {str(old): new for old, new in sorted(done.items())},
            "error": None if self.error is None else str(self.error),
        }


def _check_node(conn: AdminConnection, jobs: list[BinlogJob]) -> None:
    reply = conn.request(p.ListJobs("default", "ready", 0, 1))
    if isinstance(reply, p.UnknownCommand):
        raise AdminError(f"{conn.address} does not know import-job: it is not BeanRaft (a plain "
                         "beanstalkd?) or a BeanRaft without it; nothing was imported",
                         EXIT_REFUSED)
    stats = parse_yaml(conn.expect(p.Stats(), p.Ok).data)
    limit = int(stats.get("max-job-size", 0))
    too_big = [job.id for job in jobs if len(job.body) > limit]
    if too_big:
        raise AdminError(f"{len(too_big)} job(s) are larger than the node's max-job-size of "
                         f"{limit} bytes (first: job {too_big[0]}); start the nodes with a larger "
                         "-z; nothing was imported", EXIT_TOO_BIG)


def check_delays(jobs: list[BinlogJob], now_ns: int) -> None:
    """BinlogError if a delayed job is due further off than any delay can say: sent, the node
    would refuse it part-way through the import, and every re-run would stop at it again."""
    too_far = [job.id for job in jobs if job.delay_left_s(now_ns) > MAX_DELAY_S]
    if too_far:
        raise BinlogError(f"{len(too_far)} delayed job(s) are due more than {MAX_DELAY_S} s from "
                          f"now (first: job {too_far[0]}): their deadline is corrupt, or this "
                          "machine's clock is far behind")


def _send(conn: AdminConnection, jobs: list[BinlogJob], now_ns: int) -> Outcome:
    """Import ``jobs`` window by window; stops at the first failure."""
    outcome, tube = Outcome(), None
    for first in range(0, len(jobs), WINDOW):
        requests, owners = [], []
        for job in jobs[first:first + WINDOW]:
            if job.tube != tube:
                requests.append(p.Use(job.tube))
                owners.append(None)
                tube = job.tube
            requests.append(p.ImportJob(job.key, job.state_at(now_ns), job.pri,
                                        job.delay_left_s(now_ns), -(-job.ttr_ns // 10**9),
                                        job.body))
            owners.append(job.id)
        try:
            replies = conn.pipeline(requests)
        except PipelineBroken as exc:
            replies, outcome.error = exc.replies, exc
        for position, owner in enumerate(owners):
            if position >= len(replies):
                if owner is not None:
                    outcome.unknown.append(owner)
                continue
            reply = replies[position]
            if isinstance(reply, p.Inserted) and owner is not None:
                outcome.imported[owner] = reply.job_id
            elif isinstance(reply, p.Exists) and owner is not None:
                outcome.existing[owner] = reply.job_id
            elif not isinstance(reply, p.Using) and outcome.error is None:
                outcome.error = error_of(reply)
        if outcome.error is not None:
            return outcome
    return outcome


def run_import(binlog: Binlog, conn: AdminConnection, now_ns: int) -> Outcome:
    """Check the node, then import every job of ``binlog`` (see the module docstring)."""
    _check_node(conn, binlog.jobs)
    return _send(conn, binlog.jobs, now_ns)


def _summary(binlog: Binlog, report: dict, dry_run: bool) -> str:
    tubes = sorted({job.tube for job in binlog.jobs})
    head = (f"read {len(binlog.files)} binlog file(s): {report['jobs']} job(s) in "
            f"{len(tubes)} tube(s)")
    states = ", ".join(f"{count} {state}" for state, count in sorted(report["states"].items()))
    if dry_run:
        return f"{head} ({states}); nothing sent (--dry-run)"
    lines = [head, f"imported {report['imported']} job(s)" + (f" ({states})" if states else ""),
             f"already imported by an earlier run: {report['already_imported']}"]
    if report["error"]:
        lines.append(f"stopped: {report['error']}")
        lines.append(f"not imported: {len(report['not_imported'])} job(s); unknown (sent, no "
                     f"reply): {len(report['unknown'])}; run the same command again to import "
                     "the rest")
    return "\n".join(lines)


def _dry_report(binlog: Binlog, now_ns: int) -> dict:
    states: dict[str, int] = {}
    for job in binlog.jobs:
        states[job.state_at(now_ns)] = states.get(job.state_at(now_ns), 0) + 1
    return {"jobs": len(binlog.jobs), "imported": 0, "already_imported": 0,
            "not_imported": [job.id for job in binlog.jobs], "unknown": [], "states": states,
            "ids": {}, "error": None}


def import_binlog(directory, address, timeout, as_json, dry_run, use_tls, tls_ca, tls_cert,
                  tls_key, principal=None, token_file=None) -> None:
    """The command's body (``admin.import_binlog`` declares its options)."""
    now_ns = time.time_ns()  # the binlog's delay deadlines are wall-clock time
    try:
        binlog = read_binlog(directory)
        check_delays(binlog.jobs, now_ns)
    except BinlogError as exc:
        _fail(as_json, AdminError(f"{exc}; nothing was imported", EXIT_BAD_BINLOG))
    if dry_run:
        report = _dry_report(binlog, now_ns)
    else:
        try:
            tls = tls_context(tls_ca, tls_cert, tls_key, use_tls)
            with AdminConnection(address, timeout, tls,
                                 credentials(principal, token_file)) as conn:
                outcome = run_import(binlog, conn, now_ns)
        except AdminError as exc:
            _fail(as_json, exc)
        report = outcome.report(binlog.jobs, now_ns)
    click.echo(json.dumps(report, indent=2) if as_json else _summary(binlog, report, dry_run))
    if report["error"]:
        click.echo(f"beanraft: {report['error']}", err=True)
        sys.exit(outcome.error.status)


def _fail(as_json: bool, exc: AdminError) -> None:
    if as_json:
        click.echo(json.dumps({"error": str(exc), "status": exc.status}))
    click.echo(f"beanraft: {exc}", err=True)
    sys.exit(exc.status)
