"""A client that pipelines requests and never reads the replies costs a node bounded memory and
does not stall the other clients: on a single node, and through a cluster's leader and follower.

Method: real `beanraft serve` processes, and beanstalkd 1.12 (the reference) given the same
attack. The attacker sends its requests as fast as the server takes them, without reading a
byte, for a bounded number of requests and time. Meanwhile a probe client on the same server
puts and deletes a job every 20 ms and records each round trip. The server's peak resident
memory (VmHWM in /proc/PID/status, reset before the attack) bounds its growth. Then the attacker
reads the start of its replies (they are exact) and hangs up, and the server still serves.
The attacks are sized so that a server without an output bound grows by hundreds of MB.
Issue 9's goals are 128 MB of growth and 0.5 s for the other clients; the probe is allowed
1 s because this suite shares a loaded machine (beanstalkd itself showed 0.24 s there), while
a node that lets one pipeline hold its event loop stalls the probe for seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import pytest

from cluster.cluster_harness import Cluster, LineClient

MIB = 1 << 20
ATTACK_S = 1.5  # how long the attacker keeps sending (the probe runs as long)
MAX_PROBE_LATENCY_S = 1.0  # see the module docstring: the goal is 0.5 s
MAX_GROWTH_BYTES = 128 * MIB  # issue 9's goal for the node's memory
BODY = b"j" * 65_000  # job 1: "a 64 KB job" of issue 9
BIG_BODY = b"b" * 2_000_000  # job 2, a big job
MAX_JOB_SIZE = ("-z", str(4 << 20))


@dataclass(frozen=True)
class Attack:
    """One shape of slow reader: a pipelined request, how many of it, its first reply."""

    name: str
    request: bytes
    count: int
    first_reply: bytes  # the exact start of the first reply (for a fixed reply: all of it)


def found(job_id: int) -> bytes:
    return b"FOUND %d %d\r\n%s\r\n" % (job_id, len(BODY), BODY)


# ~400 MB of replies each (a few hundred KB of input), or many replies of a few hundred bytes.
PEEK = Attack("peek of a 64 KB job", b"peek 1\r\n", 6_000, found(1))
STATS = Attack("stats", b"stats\r\n", 400_000, b"OK ")
LIST_TUBES = Attack("list-tubes of 300 long-named tubes", b"list-tubes\r\n", 20_000, b"OK ")
RESERVE_BIG = Attack("reserve-job and release of a 2 MB job",
                     b"reserve-job 2\r\nrelease 2 0 0\r\n", 300,
                     b"RESERVED 2 %d\r\n%s\r\nRELEASED\r\n" % (len(BIG_BODY), BIG_BODY))
SMALL = Attack("many small replies (stats-job)", b"stats-job 1\r\n", 300_000, b"OK ")


# --------------------------------------------------------------------------- measuring


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


class PeakMemory:
    """The growth of a process's resident memory from now on, peak included.

    VmHWM is the kernel's own peak, reset to the current RSS by writing 5 to clear_refs; a
    sampler every 10 ms backs it up should the reset be refused.
    """

    def __init__(self, pid: int):
        self.pid = pid
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.base_kib = status_kib(pid, "VmRSS")
        self.sampled_kib = self.base_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for _ in range(10_000):
            if self._stop.wait(0.01):
                return
            self.sampled_kib = max(self.sampled_kib, status_kib(self.pid, "VmRSS"))

    def growth_bytes(self) -> int:
        self._stop.set()
        self._thread.join(timeout=2)
        peak = self.sampled_kib
        if self.hwm_reset:
            peak = max(peak, status_kib(self.pid, "VmHWM"))
        return (peak - self.base_kib) * 1024


class Probe:
    """Another client: put and delete one job every 20 ms, recording the slowest round trip."""

    def __init__(self, address):
        self.client = LineClient(address, timeout_s=15)
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in range(2_000):
                if self._stop.wait(0.02):
                    return
                started = time.monotonic()
                job_id = self.client.put(b"probe")
                assert self.client.request(b"delete %d" % job_id) == b"DELETED"
                self.latencies.append(time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> float:
        """Stops the probe; returns its slowest round trip (the stall, if it never returned)."""
        self._stop.set()
        self._thread.join(timeout=20)
        self.client.close()
        assert self.error is None, f"the probe client failed: {self.error!r}"
        assert self.latencies, "the probe never completed a round trip"
        return max(self.latencies)


def send_pipelined(address, attack: Attack, seconds: float) -> tuple[socket.socket, int]:
    """Sends ``attack.count`` requests without reading, as fast as the server takes them, for at
    most ``seconds``; returns the socket and how many whole requests went out."""
    sock = socket.create_connection(address, timeout=5)
    sock.setblocking(False)
    stream = memoryview(attack.request * attack.count)
    sent, deadline = 0, time.monotonic() + seconds
    while sent < len(stream) and time.monotonic() < deadline:
        try:
            sent += sock.send(stream[sent:sent + 256 * 1024])
        except BlockingIOError:
            time.sleep(0.005)  # the server stopped reading us: that is the point
    time.sleep(max(0.0, deadline - time.monotonic()))  # the probe keeps measuring meanwhile
    return sock, sent // len(attack.request)


def read_first_reply(sock: socket.socket, expected_start: bytes) -> bytes:
    sock.settimeout(10)
    got = b""
    while len(got) < len(expected_start):
        chunk = sock.recv(len(expected_start) - len(got))
        assert chunk, f"EOF after {got[:80]!r}"
        got += chunk
    return got


@dataclass
class Outcome:
    growth_bytes: int
    max_latency_s: float
    requests_sent: int


def run_attack(address, pid: int, attack: Attack) -> Outcome:
    """The attack against the server at ``address`` (process ``pid``), and what it cost."""
    memory = PeakMemory(pid)
    probe = Probe(address)
    attacker, sent = send_pipelined(address, attack, ATTACK_S)
    max_latency = probe.stop()
    growth = memory.growth_bytes()
    try:
        assert read_first_reply(attacker, attack.first_reply) == attack.first_reply
    finally:
        attacker.close()
    with LineClient(address) as after:
        # The server serves on, and the attacker's session ended (job 2 is ready again).
        for _ in range(100):
            if after.yaml(b"stats-job 2")["state"] == "ready":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("job 2 stayed reserved after its reserver hung up")
    return Outcome(growth, max_latency, sent)


def check(outcome: Outcome, where: str) -> None:
    summary = (f"{where}: grew {outcome.growth_bytes / MIB:.1f} MiB, slowest probe "
               f"{outcome.max_latency_s:.3f} s, {outcome.requests_sent} requests sent")
    print(summary)
    assert outcome.growth_bytes <= MAX_GROWTH_BYTES, summary
    assert outcome.max_latency_s <= MAX_PROBE_LATENCY_S, summary


def prepare(address) -> LineClient:
    """Jobs 1 (64 KB) and 2 (2 MB), and 300 tubes kept alive by the watching connection."""
    setup = LineClient(address)
    assert setup.put(BODY) == 1
    assert setup.put(BIG_BODY) == 2
    names = [b"tube-%03d-" % i + b"x" * 48 for i in range(300)]
    setup.send(b"".join(b"watch %s\r\n" % name for name in names))
    for count in range(2, 302):
        assert setup.read_line() == b"WATCHING %d" % count
    return setup


# --------------------------------------------------------------------------- single node


def test_a_single_node_bounds_the_output_of_every_shape_of_client_that_never_reads(start_server):
    node = start_server("beanraft", *MAX_JOB_SIZE)
    setup = prepare(node.address)
    try:
        failures = []
        for attack in (PEEK, STATS, LIST_TUBES, RESERVE_BIG, SMALL):
            try:
                check(run_attack(node.address, node.pid, attack), f"single node, {attack.name}")
            except AssertionError as failure:
                failures.append(str(failure).splitlines()[0])
        assert not failures, "\n".join(failures)
    finally:
        setup.close()


def test_beanstalkd_given_the_same_peek_attack_keeps_within_the_same_bounds(start_server):
    reference = start_server("beanstalkd", *MAX_JOB_SIZE)
    setup = prepare(reference.address)
    try:
        check(run_attack(reference.address, reference.pid, PEEK), "beanstalkd 1.12, peek")
    finally:
        setup.close()


# --------------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One three-node cluster for the module, holding jobs 1 (64 KB) and 2 (2 MB)."""
    running = Cluster(tmp_path_factory.mktemp("slow-readers"), extra_args=MAX_JOB_SIZE)
    try:
        running.start()
        with LineClient(running.leader().client_address) as setup:
            assert setup.put(BODY) == 1
            assert setup.put(BIG_BODY) == 2
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("role", ["leader", "follower"])
@pytest.mark.parametrize("attack", [PEEK, RESERVE_BIG], ids=lambda a: a.name.replace(" ", "-"))
def test_a_cluster_node_bounds_the_output_of_a_client_that_never_reads(cluster, role, attack):
    node = cluster.leader() if role == "leader" else cluster.followers()[0]
    check(run_attack(node.client_address, node.pid, attack), f"cluster {role}, {attack.name}")
