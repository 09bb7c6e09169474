"""The seeded workload: producers and workers on every node, recording every operation.

Every client process draws its choices from ``random.Random(f"{seed}/{name}")``, so a seed
replays the same decisions (what the network and scheduler do with them differs, of course).

* A producer mostly puts (unique ASCII bodies that carry their TTR, assorted priorities, some
  delayed), and sometimes kicks, peeks a job it heard of, or drops its connection.
* A worker reserves with a timeout of 0 or 1 s, then deletes, releases (sometimes delayed),
  buries, touches, or drops its connection while holding the job, and now and then stalls past
  the job's TTR so that the job expires under it.
* Any indefinite reply ends the connection (it is unusable); the next operation opens a new one
  with a new ``conn`` id. INTERNAL_ERROR (the cluster ended our session) ends it too.
"""

from __future__ import annotations

import itertools
import random
import threading
import time

from .client import Conn, Indefinite, Refused
from .history import History

PRIORITIES = (0, 1, 10, 100, 1024, 65536, 2**31)
TTRS = (2, 3, 5)
_conn_ids = itertools.count(1)
_conn_lock = threading.Lock()


def new_conn_id() -> int:
    with _conn_lock:
        return next(_conn_ids)


def _classify(f: str, reply: tuple) -> tuple[str, dict]:
    """A definite reply as (ok|fail, value) for operation ``f``."""
    tag = reply[0]
    good = {"put": ("INSERTED", "BURIED"), "reserve": ("RESERVED",), "delete": ("DELETED",),
            "release": ("RELEASED", "BURIED"), "bury": ("BURIED",), "touch": ("TOUCHED",),
            "kick": ("KICKED",), "peek": ("FOUND",)}[f]
    if tag not in good:
        return "fail", {"error": " ".join(str(w) for w in reply)}
    if tag in ("RESERVED", "FOUND"):
        return "ok", {"id": reply[1], "body": reply[2].decode("ascii", "replace")}
    if tag == "KICKED":
        return "ok", {"count": reply[1]}
    if f == "put":
        return "ok", {"id": reply[1], **({"buried": True} if tag == "BURIED" else {})}
    return "ok", {"buried": True} if (f == "release" and tag == "BURIED") else {}


def ttr_of(body: str) -> int:
    """The TTR a body carries (a ``t<seconds>`` field between dots); 5 if it has none."""
    for field_ in body.split("."):
        if field_[:1] == "t" and field_[1:].isdigit():
            return int(field_[1:])
    return 5


class Client:
    """One client process bound to one node: records each operation it performs."""

    def __init__(self, name: str, node: str, address: tuple[str, int], history: History,
                 op_timeout_s: float):
        self.name = name
        self.node = node
        self.address = address
        self.history = history
        self.op_timeout_s = op_timeout_s
        self.conn: Conn | None = None
        self.conn_id: int | None = None

    def connected(self) -> bool:
        if self.conn is None:
            try:
                self.conn = Conn(self.address)
            except Refused:
                return False
            self.conn_id = new_conn_id()
        return True

    def op(self, f: str, line: str, args: dict, body: bytes | None = None,
           wait_s: float = 0.0) -> tuple[str, dict] | None:
        """Perform one operation; None if no connection could be had (nothing was sent)."""
        if not self.connected():
            return None
        self.history.invoke(self.name, f, args, self.node, self.conn_id)
        try:
            reply = self.conn.call(line, body, timeout_s=self.op_timeout_s + wait_s)
        except Indefinite as exc:
            self.history.complete(self.name, "info", {"error": str(exc)})
            self.conn = None
            return "info", {}
        type_, value = _classify(f, reply)
        self.history.complete(self.name, type_, value)
        if value.get("error", "").startswith("INTERNAL_ERROR"):
            self.close()  # the node closes the connection after this reply
        return type_, value

    def close(self) -> None:
        """Close the connection (recorded: a worker's held job is released by this)."""
        if self.conn is not None:
            self.history.invoke(self.name, "close", {}, self.node, self.conn_id)
            self.conn.close()
            self.history.complete(self.name, "ok")
            self.conn = None


class Shared:
    """What clients learn from each other: ids worth peeking (deleted ones above all)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids: list[int] = []

    def learn(self, job_id: int) -> None:
        with self.lock:
            self.ids.append(job_id)
            if len(self.ids) > 500:
                del self.ids[:250]

    def pick(self, rng: random.Random) -> int | None:
        with self.lock:
            return rng.choice(self.ids) if self.ids else None


class Process(threading.Thread):
    """A producer or a worker, run until ``stop`` is set, ``end`` passes or ``max_ops`` ran."""

    def __init__(self, kind: str, client: Client, seed: int, end: float, stop: threading.Event,
                 shared: Shared, max_ops: int = 100_000):
        super().__init__(name=client.name, daemon=True)
        self.kind = kind
        self.client = client
        self.rng = random.Random(f"{seed}/{client.name}")
        self.seed = seed
        self.end = end
        self.stop = stop
        self.shared = shared
        self.max_ops = max_ops
        # Producers are slower than workers, so the queue is often empty and reserves wait.
        self.pace_s = (0.03, 0.12) if kind == "producer" else (0.005, 0.04)
        self.held: tuple[int, int] | None = None  # (id, ttr)
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = self.produce if self.kind == "producer" else self.work
            while not self.stop.is_set() and time.monotonic() < self.end and self.count < self.max_ops:
                self.count += 1
                if step() is None:
                    self.stop.wait(0.2)  # no connection: the node is down or cut off
                self.stop.wait(self.rng.uniform(*self.pace_s))
        except BaseException as exc:  # reported by the harness
            self.error = exc
        finally:
            self.client.close()

    # -- producer --------------------------------------------------------------------------

    def produce(self):
        r = self.rng.random()
        if r < 0.80:
            return self.put()
        if r < 0.88:
            bound = self.rng.randint(1, 10)
            return self.client.op("kick", f"kick {bound}", {"bound": bound})
        if r < 0.96:
            job_id = self.shared.pick(self.rng)
            if job_id is None:
                return True
            return self.client.op("peek", f"peek {job_id}", {"id": job_id})
        self.client.close()
        return True

    def put(self):
        pri = self.rng.choice(PRIORITIES)
        delay = self.rng.choice((0,) * 9 + (1, 2))
        ttr = self.rng.choice(TTRS)
        tag = f"{self.seed}.{self.client.name}.{self.count}.t{ttr}."
        body = tag + "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                             for _ in range(self.rng.randint(4, 100)))
        data = body.encode()
        result = self.client.op("put", f"put {pri} {delay} {ttr} {len(data)}",
                                {"body": body, "pri": pri, "delay": delay, "ttr": ttr}, data)
        if result and result[0] == "ok" and self.rng.random() < 0.2:
            self.shared.learn(result[1]["id"])
        return result

    # -- worker ----------------------------------------------------------------------------

    def work(self):
        if self.held is None:
            timeout = self.rng.choice((0, 1, 1, 1))
            result = self.client.op("reserve", f"reserve-with-timeout {timeout}",
                                    {"timeout": timeout}, wait_s=timeout)
            if result and result[0] == "ok":
                self.held = (result[1]["id"], ttr_of(result[1]["body"]))
            return result
        job_id, ttr = self.held
        r = self.rng.random()
        if r < 0.01:  # stall past the TTR: the job goes back to ready under us
            self.stop.wait(min(ttr + 0.5, max(0.0, self.end - time.monotonic())))
            return True
        if r < 0.08:
            self.held = None
            self.client.close()
            return True
        if r < 0.20:
            result = self.client.op("touch", f"touch {job_id}", {"id": job_id})
            if result is None or result[0] != "ok":
                self.held = None
            return result
        self.held = None
        if r < 0.35:
            pri, delay = self.rng.choice(PRIORITIES), self.rng.choice((0, 0, 1))
            return self.client.op("release", f"release {job_id} {pri} {delay}",
                                  {"id": job_id, "pri": pri, "delay": delay})
        if r < 0.45:
            pri = self.rng.choice(PRIORITIES)
            return self.client.op("bury", f"bury {job_id} {pri}", {"id": job_id, "pri": pri})
        result = self.client.op("delete", f"delete {job_id}", {"id": job_id})
        if result and result[0] == "ok":
            self.shared.learn(job_id)
        return result
