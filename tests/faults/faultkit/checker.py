"""The checker: reads a history (history.py) and names the anomalies in it.

Anomalies, and why each report is sound (no false alarm from a legitimate schedule):

* ``lost-job``: a put answered ``INSERTED id`` (or ``BURIED id``) whose job was neither deleted
  (a delete of that id that succeeded or whose outcome is unknown) nor reserved by the final
  drain, which empties the healed cluster.
* ``double-delivery``: connection c2 got ``RESERVED j`` while connection c1 certainly still held j.
  c1 holds j from its ``RESERVED j`` until the earliest moment it may have lost it: its own
  release/bury/delete of j (invoke time, any outcome), any indefinite operation or close of its
  connection, the TTR expiry, or the start of a fault on c1's node (owner loss: a restart or a
  DROP_NODE closes the session; the window lasts ``owner_loss_margin_s`` after the heal, unless
  a later definite reply on c1 proves the session was still open). The TTR cannot have expired
  before ``reserve.invoke + ttr`` (or ``touch.invoke + ttr`` after a ``TOUCHED``), less the
  ``SLEW`` share of the TTR by which a leader may run the cluster's time fast to close a gap to
  its clock: nodes stamp entries with the same wall clock the history uses, after the client
  sent the command, and a machine's time never runs ahead of that clock. Independently, a later ``TOUCHED``/``RELEASED``/
  ``BURIED`` for j on c1 proves c1 held j all along (it never reserved j again in between).
  c2's reservation counts when it was invoked after c1's completed and completed before c1's
  certain holding ended.
* ``resurrection``: a job observed (reserved, peeked, touched, released, buried, deleted again,
  drained) by an operation invoked after a ``DELETED`` for it was received.
* ``divergence``: two nodes' /status documents with the same ``digest_index`` and different
  ``digest``.
* ``wrong-answer``: a definite reply that the rest of the history contradicts:
  ``put-failed-but-present`` (a put refused with a definite error whose body turned up),
  ``body-mismatch`` (a job seen with another body than the put that created it), ``id-reuse``
  (two puts answered with the same id), ``phantom`` (a body nobody put), ``not-found-while-held``
  (NOT_FOUND for touch/release/bury/delete of a job the connection certainly held),
  ``deleted-while-held`` (DELETED for a job another connection certainly held).
* ``duplicate-job``: one put's body seen under two ids (the put was executed twice).

The checker never treats an ``info`` (indefinite) completion as a failure: an indefinite put may
or may not have created its job, an indefinite delete may or may not have deleted it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from beanraft.replication.clock import SLEW

INF = math.inf
MUTATIONS = {"put", "reserve", "delete", "release", "bury", "touch", "kick"}
JOB_OPS = {"delete", "release", "bury", "touch", "peek"}
# Definite replies that do not prove the session still exists in the replicated state.
NOT_PROOF = {"OUT_OF_MEMORY", "INTERNAL_ERROR", "DRAINING", "BAD_FORMAT", "UNKNOWN_COMMAND",
             "EXPECTED_CRLF", "JOB_TOO_BIG"}
DEFAULT_MARGIN_S = 20.0


@dataclass
class Op:
    """An invoke paired with its completion."""

    index: int
    process: str
    node: str | None
    conn: int | None
    f: str
    args: dict
    type: str  # ok | fail | info
    result: dict
    t0: float
    t1: float

    @property
    def job(self):
        return self.result.get("id") if self.f == "reserve" else self.args.get("id")

    def brief(self) -> dict:
        return {"index": self.index, "process": self.process, "node": self.node, "conn": self.conn,
                "f": self.f, "args": self.args, "type": self.type, "result": self.result,
                "t0": round(self.t0, 4), "t1": round(self.t1, 4) if self.t1 < INF else None}


@dataclass
class Report:
    anomalies: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    stats: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.anomalies.values())

    def add(self, name: str, **detail) -> None:
        self.anomalies[name].append(detail)

    def summary(self, limit: int = 5) -> str:
        lines = [f"valid: {self.valid}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.stats.items())]
        for name, items in sorted(self.anomalies.items()):
            if items:
                lines.append(f"ANOMALY {name}: {len(items)}")
                lines += [f"    {item}" for item in items[:limit]]
        return "\n".join(lines)


def fault_windows(steps) -> dict[str, list[tuple[float, float]]]:
    """node -> [(start, end)] from the nemesis' (f, nodes, start, end) steps in order.

    A node's window opens at the first fault that names it and closes when as many heals have
    named it, whatever their kinds: a membership change names the node it removes and the node
    it kills, and is healed by a restart of the one and a rejoin of the other.
    """
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    open_faults: dict[str, int] = defaultdict(int)
    opened_at: dict[str, float] = {}
    for f, nodes, start, end in steps:
        for node in nodes:
            if f == "fault":
                if not open_faults[node]:
                    opened_at[node] = start
                open_faults[node] += 1
            elif f == "heal" and open_faults[node]:
                open_faults[node] -= 1
                if not open_faults[node]:
                    windows[node].append((opened_at[node], end))
    for node, count in open_faults.items():
        if count:
            windows[node].append((opened_at[node], INF))
    return windows


def pair(events: list[dict]) -> list[Op]:
    """Pair every invoke with its process's next completion; an unanswered invoke is ``info``."""
    open_: dict[str, dict] = {}
    ops: list[Op] = []
    for event in events:
        if event["type"] == "invoke":
            if event["process"] in open_:
                ops.append(_op(open_.pop(event["process"]), None))
            open_[event["process"]] = event
        else:
            start = open_.pop(event["process"], None)
            if start is not None:
                ops.append(_op(start, event))
    ops.extend(_op(start, None) for start in open_.values())
    ops.sort(key=lambda o: (o.t0, o.index))
    return ops


def _op(start: dict, end: dict | None) -> Op:
    return Op(index=start["index"], process=start["process"], node=start.get("node"),
              conn=start.get("conn"), f=start["f"], args=start.get("value") or {},
              type=end["type"] if end else "info", result=(end or {}).get("value") or {},
              t0=start["time"], t1=end["time"] if end else INF)


class _Checker:
    def __init__(self, events: list[dict], owner_loss_margin_s: float | None):
        self.ops = pair(events)
        config = next((o.args for o in self.ops if o.f == "config"), {})
        self.margin = owner_loss_margin_s or config.get("owner_loss_margin_s", DEFAULT_MARGIN_S)
        self.report = Report()
        self.client = [o for o in self.ops if o.f in MUTATIONS | JOB_OPS | {"close"}]
        self.by_conn: dict[int, list[Op]] = defaultdict(list)
        for op in self.client:
            if op.conn is not None:
                self.by_conn[op.conn].append(op)
        self.position = {id(op): i for ops in self.by_conn.values() for i, op in enumerate(ops)}
        # conn -> invoke time of its last reply that proves its session was still open
        self.alive_at: dict[int, float] = defaultdict(lambda: -INF)
        for op in self.client:
            if op.conn is not None and _proves_session(op):
                self.alive_at[op.conn] = max(self.alive_at[op.conn], op.t0)
        self.faults = self._fault_windows()
        self.body_of: dict[int, str] = {}
        self.ids_of_body: dict[str, set[int]] = defaultdict(set)
        self.put_of_body: dict[str, Op] = {}

    # -- faults ----------------------------------------------------------------------------

    def _fault_windows(self) -> dict[str, list[tuple[float, float]]]:
        """node -> [(start, end)]: from a fault's invoke to its heal's completion."""
        return fault_windows((op.f, op.args.get("nodes", []), op.t0, op.t1)
                             for op in self.ops if op.process == "nemesis")

    # -- identities ------------------------------------------------------------------------

    def identities(self) -> None:
        r = self.report
        for op in self.client:
            if op.f == "put":
                self.put_of_body[op.args["body"]] = op
        for op in self.client:
            if op.f == "put" and op.type == "ok":
                job_id, body = op.result["id"], op.args["body"]
                if job_id in self.body_of and self.body_of[job_id] != body:
                    r.add("wrong-answer", kind="id-reuse", id=job_id, op=op.brief())
                self.body_of.setdefault(job_id, body)
                self.ids_of_body[body].add(job_id)
        for op in self.client:
            seen = _seen_body(op)
            if seen is None:
                continue
            job_id, body = seen
            if body not in self.put_of_body:
                r.add("wrong-answer", kind="phantom", id=job_id, body=body, op=op.brief())
                continue
            known = self.body_of.get(job_id)
            if known is not None and known != body:
                r.add("wrong-answer", kind="body-mismatch", id=job_id, expected=known, got=body,
                      op=op.brief())
                continue
            self.body_of.setdefault(job_id, body)
            self.ids_of_body[body].add(job_id)
            put = self.put_of_body[body]
            if put.type == "fail":
                r.add("wrong-answer", kind="put-failed-but-present", id=job_id, put=put.brief(),
                      seen=op.brief())
        for body, ids in self.ids_of_body.items():
            if len(ids) > 1:
                r.add("duplicate-job", body=body, ids=sorted(ids))

    # -- lost jobs -------------------------------------------------------------------------

    def lost(self) -> None:
        drained = {op.result["id"] for op in self.client
                   if op.process == "drain" and op.f == "reserve" and op.type == "ok"}
        maybe_deleted = {op.args["id"] for op in self.client
                         if op.f == "delete" and op.type in ("ok", "info")}
        acked = {op.result["id"]: op for op in self.client if op.f == "put" and op.type == "ok"}
        for job_id, put in sorted(acked.items()):
            if job_id not in drained and job_id not in maybe_deleted:
                self.report.add("lost-job", id=job_id, put=put.brief())
        self.report.stats["acknowledged puts"] = len(acked)
        self.report.stats["jobs drained at the end"] = len(drained)

    # -- resurrection ----------------------------------------------------------------------

    def resurrection(self) -> None:
        deletes: dict[int, float] = {}
        for op in self.client:
            if op.f == "delete" and op.type == "ok":
                deletes[op.args["id"]] = min(deletes.get(op.args["id"], INF), op.t1)
        for op in self.client:
            job_id = _observed(op)
            if job_id is not None and job_id in deletes and op.t0 > deletes[job_id]:
                self.report.add("resurrection", id=job_id, deleted_at=round(deletes[job_id], 4),
                                seen=op.brief())

    # -- holding ---------------------------------------------------------------------------

    def _ttr(self, job_id: int) -> float:
        put = self.put_of_body.get(self.body_of.get(job_id, ""))
        return max(float(put.args.get("ttr", 1)), 1.0) if put else 1.0

    def held_until(self, res: Op, other: Op) -> tuple[float, str]:
        """The time until which ``res``'s connection certainly held the job, judged for an
        ``other`` operation (its faults are considered up to ``other``'s completion)."""
        job_id, ttr = res.job, self._ttr(res.job)
        # A leader moves the cluster's time towards its clock at SLEW at most (clock.py).
        deadline, end, why, proof = res.t0 + ttr * (1 - SLEW), INF, "the connection stayed open", -INF
        ops = self.by_conn[res.conn]
        for op in ops[self.position[id(res)] + 1:]:
            if op is other:
                continue
            if op.f == "reserve" and op.type == "ok" and op.job == job_id:
                end, why = op.t0, "reserved again by the same connection"
                break
            if op.job == job_id and op.f in ("touch", "release", "bury", "delete"):
                if op.type == "ok" and op.f != "delete":
                    proof = op.t0  # TOUCHED, RELEASED, BURIED: it still held the job then
                if op.f == "touch" and op.type == "ok":
                    if op.t0 < other.t1:  # later touches count as proofs instead
                        deadline = max(deadline, op.t0 + ttr * (1 - SLEW))
                    continue
                end, why = op.t0, f"{op.f} by its holder"
                break
            if op.type == "info" or op.f == "close":
                end, why = op.t0, f"{op.f} {op.type}"
                break
        if deadline < end:
            end, why = deadline, "TTR"
        loss = self._owner_loss(res, other)
        if loss < end:
            end, why = loss, "fault on the holder's node"
        if proof > end:
            end, why = proof, "proved by a later touch/release/bury"
        return end, why

    def _owner_loss(self, res: Op, other: Op) -> float:
        if self.alive_at[res.conn] > other.t1:
            return INF  # a later definite reply shows the session was still open
        earliest = INF
        for start, stop in self.faults.get(res.node, []):
            if stop + self.margin > res.t0 and start < other.t1:
                earliest = min(earliest, max(start, res.t0))
        return earliest

    def double_delivery(self) -> None:
        reserves: dict[int, list[Op]] = defaultdict(list)
        for op in self.client:
            if op.f == "reserve" and op.type == "ok":
                reserves[op.result["id"]].append(op)
        for job_id, rs in reserves.items():
            for i, first in enumerate(rs):
                for second in rs[i + 1:]:
                    if second.conn == first.conn or second.t0 <= first.t1:
                        continue
                    until, why = self.held_until(first, second)
                    if second.t1 < until:
                        self.report.add("double-delivery", id=job_id, holder=first.brief(),
                                        second=second.brief(), held_until=round(until, 4),
                                        because=why)

    def wrong_while_held(self) -> None:
        reserves_of: dict[int, list[Op]] = defaultdict(list)
        for op in self.client:
            if op.f == "reserve" and op.type == "ok":
                reserves_of[op.result["id"]].append(op)
        for op in self.client:
            if op.f not in ("touch", "release", "bury", "delete") or op.type == "info":
                continue
            before = [r for r in reserves_of.get(op.job, []) if r.t1 < op.t0]
            mine = [r for r in before if r.conn == op.conn]
            if mine and op.result.get("error") == "NOT_FOUND":
                res = mine[-1]
                until, why = self.held_until(res, op)
                if op.t1 < until:
                    self.report.add("wrong-answer", kind="not-found-while-held", id=op.job,
                                    holder=res.brief(), op=op.brief(), held_because=why)
            if op.f == "delete" and op.type == "ok":
                for res in before:
                    if res.conn == op.conn:
                        continue
                    until, why = self.held_until(res, op)
                    if op.t1 < until:
                        self.report.add("wrong-answer", kind="deleted-while-held", id=op.job,
                                        holder=res.brief(), op=op.brief(), held_because=why)

    # -- divergence ------------------------------------------------------------------------

    def divergence(self) -> None:
        seen: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for op in self.ops:
            if op.f in ("status", "final-status") and op.type == "ok" and op.result.get("digest"):
                seen[op.result["digest_index"]][op.result["digest"]].append(op.node)
        compared = 0
        for index, digests in sorted(seen.items()):
            nodes = {n for ns in digests.values() for n in ns}
            compared += len(nodes) > 1
            if len(digests) > 1:
                self.report.add("divergence", digest_index=index,
                                digests={d: sorted(set(ns)) for d, ns in digests.items()})
        self.report.stats["indices compared across nodes"] = compared

    def counts(self) -> None:
        stats = self.report.stats
        for op in self.ops:
            if op.process in ("sampler",):
                continue
            key = f"{op.f} {op.type}"
            stats[key] = stats.get(key, 0) + 1
            if op.type == "fail" and op.f in MUTATIONS | JOB_OPS:
                key = f"{op.f} fail {op.result.get('error', '?')}"
                stats[key] = stats.get(key, 0) + 1
        unknown = [o for o in self.client if o.f == "put" and o.type == "info"]
        stats["indefinite puts later seen"] = sum(1 for o in unknown if self.ids_of_body.get(o.args["body"]))


def check(events: list[dict], owner_loss_margin_s: float | None = None) -> Report:
    """Check a history; the report's ``valid`` is False when any anomaly was found."""
    c = _Checker(events, owner_loss_margin_s)
    c.identities()
    c.lost()
    c.resurrection()
    c.double_delivery()
    c.wrong_while_held()
    c.divergence()
    c.counts()
    return c.report


def _seen_body(op: Op) -> tuple[int, str] | None:
    """(id, body) when a reply showed a job's body."""
    if op.type == "ok" and op.f in ("reserve", "peek") and "body" in op.result:
        return op.result["id"], op.result["body"]
    return None


def _observed(op: Op) -> int | None:
    """The job id whose existence a reply proves, if any."""
    if op.type != "ok":
        return None
    if op.f in ("reserve", "peek"):
        return op.result.get("id")
    if op.f in ("touch", "release", "bury", "delete"):
        return op.args.get("id")
    return None


def _proves_session(op: Op) -> bool:
    return (op.f in MUTATIONS and op.type in ("ok", "fail")
            and op.result.get("error") not in NOT_PROOF)
