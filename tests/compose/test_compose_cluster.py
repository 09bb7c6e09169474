"""The cluster of compose/docker-compose.yml keeps every job when its leader's container is killed.

Goal: what a user runs -- compose/build-offline.sh, then ``docker-compose -f
compose/docker-compose.yml up`` -- gives three healthy nodes on 127.0.0.1 that fail over and take a
restarted node back without losing or resurrecting a job.

Method: start a Docker engine when none answers (the script's ``engine`` step; the test stops it
again at the end) and skip, saying why, when none can be had. Build the image with the script's
other steps: a Debian base made with debootstrap and ``docker import`` that trusts this host's CA
bundle, wheels built on this machine, ``docker build --network none``. Bring the compose file up under a project name of its
own, with the file's own loopback ports. Put jobs through one follower, reserve and delete some
through the other, ``docker kill`` the leader's container, wait for a new leader among the
survivors and peek every job through both of them; ``docker start`` the container, wait for it
to catch up, and drain the queue through it. ``down -v`` removes containers, networks and volumes
even when a step fails, and the test checks that nothing of the project is left; the image it
built (and the base image, when this run made it) is removed at the end too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import greenstalk
import pytest

from beanraft.node.launcher import port_is_free

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "compose" / "build-offline.sh"
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
PROJECT = "beanraft-compose-test"
IMAGE = "beanraft:compose-test"
BASE_IMAGE = "python:3.11-slim-bookworm"  # build-offline.sh's default
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST = "127.0.0.1"
LOCK_FILE = "/tmp/beanraft-compose-test.lock"
NO_ENGINE = 3  # build-offline.sh's exit status when no Docker engine can be had

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Node:
    """One service of the compose file and the loopback ports the file gives it."""

    service: str
    client_port: int
    http_port: int
    raft_port: int

    @property
    def raft(self) -> str:
        return f"{HOST}:{self.raft_port}"


NODES = [Node(f"node{i + 1}", 11300 + i, 8301 + i, 21300 + i) for i in range(3)]
BY_RAFT = {node.raft: node for node in NODES}


# --------------------------------------------------------------------------- commands


def run(argv: list[str], timeout_s: float, env: dict | None = None, check: bool = True):
    """Runs a command, capturing its output; with ``check``, a failure fails the test with it."""
    result = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited with {result.returncode}:\n"
                    f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    return result


def engine_answers() -> bool:
    try:
        return run(["docker", "info"], timeout_s=30, check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def compose_command() -> list[str]:
    """docker-compose (v1, what apt installs), else the ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def compose_env() -> dict[str, str]:
    """This environment, with the test's image and nothing that would change the compose file."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BEANRAFT_", "COMPOSE_"))}
    env["BEANRAFT_IMAGE"] = IMAGE
    return env


def compose(*args: str, timeout_s: float = 120, check: bool = True):
    argv = compose_command() + ["-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    return run(argv, timeout_s, env=compose_env(), check=check)


def project_leftovers() -> dict[str, list[str]]:
    """The project's containers, volumes and networks that still exist."""
    label = f"label=com.docker.compose.project={PROJECT}"
    listings = {"containers": ["docker", "ps", "-aq"], "volumes": ["docker", "volume", "ls", "-q"],
                "networks": ["docker", "network", "ls", "-q"]}
    found = {kind: run(argv + ["--filter", label], 60).stdout.split() for kind, argv in listings.items()}
    return {kind: ids for kind, ids in found.items() if ids}


def container_of(node: Node) -> str:
    ids = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
               "--filter", f"label=com.docker.compose.service={node.service}"], 60).stdout.split()
    assert len(ids) == 1, f"{node.service}: containers {ids}"
    return ids[0]


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container], 60).stdout)[0]


# --------------------------------------------------------------------------- the nodes over HTTP


def status(node: Node) -> dict | None:
    """The node's GET /status document, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{node.http_port}/status", timeout=2) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


def ready(node: Node) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{node.http_port}/readyz", timeout=2) as reply:
            return reply.status == 200
    except OSError:  # refused, timed out, or an HTTP error status such as 503
        return False


def wait_for(what: str, probe, timeout_s: float, interval_s: float = 0.5):
    """Calls ``probe()`` until it returns something true and returns that; fails after the time."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            observed = {node.service: status(node) for node in NODES}
            pytest.fail(f"not after {timeout_s} s: {what}\nstatus: {json.dumps(observed, indent=1)}")
        time.sleep(interval_s)


def agreed_leader(nodes: list[Node], above_term: int = -1) -> dict | None:
    """The leader's status once all ``nodes`` are ready and follow one leader above a term."""
    if not all(ready(node) for node in nodes):
        return None
    docs = [status(node) for node in nodes]
    if any(doc is None for doc in docs) or len({doc["leader"] for doc in docs}) != 1:
        return None
    leader = next((doc for doc in docs if doc["role"] == "leader"), None)
    if leader is None or leader["term"] <= above_term:
        return None
    return leader


def caught_up(node: Node, jobs_ready: int) -> bool:
    """The node is ready and shows exactly ``jobs_ready`` ready jobs (applied on it)."""
    doc = status(node)
    return ready(node) and doc is not None and doc["jobs"]["ready"] == jobs_ready


# --------------------------------------------------------------------------- the queue


def client(node: Node) -> greenstalk.Client:
    return greenstalk.Client((HOST, node.client_port), encoding=None, use="compose-test",
                             watch="compose-test")


def assert_jobs(node: Node, present: dict[int, bytes], deleted: list[int]) -> None:
    """Through ``node``: each present id peeks with its body, each deleted id is NOT_FOUND."""
    with client(node) as queue:
        for job_id, body in present.items():
            assert queue.peek(job_id).body == body, f"{node.service}: job {job_id}"
        for job_id in deleted:
            with pytest.raises(greenstalk.NotFoundError):
                queue.peek(job_id)


# --------------------------------------------------------------------------- fixtures


def stop_engine(pid: int) -> None:
    """SIGTERM to the dockerd this test started (it stops its containerd), SIGKILL after 60 s."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def machine_lock():
    """A lock that other runs of this module on the machine wait for: they share the project
    name, the ports, compose/wheels/ and perhaps the engine, and would undo each other's work."""
    with open(LOCK_FILE, "a") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another run held {LOCK_FILE} for 600 s")
                time.sleep(1)
        yield
        # Closing the file releases the lock.


@pytest.fixture(scope="module")
def engine(machine_lock, tmp_path_factory):
    """A Docker engine: the running one, else one started here (and stopped after the module)."""
    if engine_answers():
        yield
        return
    state = tmp_path_factory.mktemp("dockerd")
    env = dict(os.environ, DOCKERD_PIDFILE=str(state / "dockerd.pid"),
               DOCKERD_LOG=str(state / "dockerd.log"))
    started = run([str(SCRIPT), "engine"], timeout_s=600, env=env, check=False)
    if started.returncode == NO_ENGINE:
        reason = (started.stderr.strip().splitlines() or ["build-offline.sh engine gave up"])[-1]
        pytest.skip(f"no Docker engine could be started here: {reason}")
    if started.returncode != 0:
        pytest.fail(f"build-offline.sh engine exited with {started.returncode}:\n{started.stderr}")
    pid = int((state / "dockerd.pid").read_text())
    yield
    stop_engine(pid)


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], 60, check=False).returncode == 0


@pytest.fixture(scope="module")
def image(engine):
    """The BeanRaft image, built by build-offline.sh with no registry and no network; removed
    after the module, with the base image when this build made it."""
    base_was_there = image_exists(BASE_IMAGE)
    env = dict(os.environ, BEANRAFT_IMAGE=IMAGE, PYTHON=sys.executable)
    try:
        run([str(SCRIPT), "base", "wheels", "image"], timeout_s=900, env=env)
        yield IMAGE
    finally:
        built = [IMAGE] + ([] if base_was_there else [BASE_IMAGE])
        run(["docker", "image", "rm", "--force", *built], 120, check=False)
        left = [name for name in built if image_exists(name)]
        assert not left, f"images the test built are still there: {left}"


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (connections in TIME_WAIT do not count)."""
    return not port_is_free(port, HOST)


@pytest.fixture(scope="module")
def cluster(image):
    """The compose file's three nodes, up; afterwards down with their volumes, checked gone."""
    ports = [port for node in NODES for port in (node.client_port, node.http_port, node.raft_port)]
    deadline = time.monotonic() + 180  # e.g. a `beanraft cluster` on the same default ports
    while busy := [port for port in ports if port_in_use(port)]:
        if time.monotonic() > deadline:
            pytest.fail(f"127.0.0.1 ports {busy} stayed in use for 180 s; the compose file needs them")
        time.sleep(1)
    compose("down", "-v", "--remove-orphans", check=False)  # what a killed earlier run left
    try:
        compose("up", "-d")
        yield
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "10")
        assert project_leftovers() == {}


def compose_logs() -> str:
    """The project's container logs; conftest.py adds them to the report of a failing test."""
    return compose("logs", "--no-color", "--tail", "200", check=False).stdout


# --------------------------------------------------------------------------- tests


def test_the_image_runs_as_a_user_keeps_data_on_a_volume_and_checks_readyz(image):
    config = json.loads(run(["docker", "image", "inspect", image], 60).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert "/var/lib/beanraft" in config["Volumes"]
    assert config["Healthcheck"]["Test"] == ["CMD", "beanraft-healthcheck"]
    assert config["Entrypoint"] == ["beanraft-entrypoint"] and config["Cmd"] == ["serve"]


def test_a_base_image_made_here_trusts_the_ca_bundle_of_this_host(image):
    """So a build FROM it (compose's, without compose/wheels/) fetches packages wherever this host
    can, e.g. through a TLS-inspecting proxy whose CA only this host trusts."""
    config = json.loads(run(["docker", "image", "inspect", BASE_IMAGE], 60).stdout)[0]["Config"]
    labels = config.get("Labels") or {}
    if "compose/build-offline.sh" not in labels.get("org.opencontainers.image.description", ""):
        pytest.skip(f"{BASE_IMAGE} was not made by build-offline.sh; it was kept as it is")
    bundle = Path(os.environ.get("HOST_CA_BUNDLE") or IMAGE_CA_BUNDLE)
    if not bundle.is_file():
        pytest.skip(f"no CA bundle at {bundle} on this host")
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert labels["org.beanraft.base.host-ca"] == f"sha256:{digest}"
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        assert f"{variable}={IMAGE_CA_BUNDLE}" in config["Env"]
    # The BeanRaft image built FROM it holds the same bundle.
    in_image = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sha256sum",
                    image, IMAGE_CA_BUNDLE], 60).stdout
    assert in_image.split()[0] == digest


def test_the_nodes_run_on_host_networking_with_a_restart_policy_and_own_volumes(cluster):
    for node in NODES:
        container = inspect(container_of(node))
        assert container["HostConfig"]["NetworkMode"] == "host"
        assert container["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        volumes = {mount["Destination"]: mount["Name"] for mount in container["Mounts"]}
        assert volumes["/var/lib/beanraft"] == f"{PROJECT}_{node.service}-data"
        assert volumes["/etc/beanraft"] == f"{PROJECT}_cluster-secret"
    # The nodes got the same secret: they formed one cluster.
    wait_for("one leader that all three nodes follow", lambda: agreed_leader(NODES), 120)
    for node in NODES:
        wait_for(f"{node.service} healthy", lambda node=node: inspect(container_of(node))["State"]
                 .get("Health", {}).get("Status") == "healthy", 90)
        assert status(node)["client"] == f"{HOST}:{node.client_port}"


def test_jobs_survive_a_docker_kill_of_the_leader_and_the_restarted_node_rejoins(
        cluster):
    leader_doc = wait_for("one leader that all three nodes follow", lambda: agreed_leader(NODES), 120)
    leader = BY_RAFT[leader_doc["node"]]
    producer, consumer = [node for node in NODES if node is not leader]

    with client(producer) as queue:
        bodies = {queue.put(f"job {i}".encode()): f"job {i}".encode() for i in range(10)}
    with client(consumer) as queue:
        deleted = []
        for expected_id in sorted(bodies)[:4]:
            job = queue.reserve(timeout=10)
            assert (job.id, job.body) == (expected_id, bodies[expected_id])
            queue.delete(job)
            deleted.append(job.id)
    present = {job_id: body for job_id, body in bodies.items() if job_id not in deleted}

    run(["docker", "kill", container_of(leader)], 60)
    survivors = [producer, consumer]
    new_leader = wait_for("a new leader among the survivors",
                          lambda: agreed_leader(survivors, above_term=leader_doc["term"]), 60)
    assert new_leader["node"] != leader.raft
    for node in survivors:
        wait_for(f"{node.service} shows the 6 ready jobs", lambda node=node: caught_up(node, 6), 30)
        assert_jobs(node, present, deleted)
    with client(BY_RAFT[new_leader["node"]]) as queue:
        late_id = queue.put(b"put after the failover")
    present[late_id] = b"put after the failover"

    run(["docker", "start", container_of(leader)], 60)
    wait_for(f"{leader.service} back and caught up", lambda: caught_up(leader, 7), 90)
    wait_for("all three nodes following one leader", lambda: agreed_leader(NODES), 30)
    assert_jobs(leader, present, deleted)
    with client(leader) as queue:
        drained = {}
        for _ in present:
            job = queue.reserve(timeout=10)
            drained[job.id] = job.body
            queue.delete(job)
        with pytest.raises(greenstalk.TimedOutError):
            queue.reserve(timeout=0)
    assert drained == present
