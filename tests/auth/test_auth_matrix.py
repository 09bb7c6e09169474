"""Every command, every role, the exact reply: the permission matrix of --auth-file, through the
leader and through a follower of one three-node cluster.

Method: one module-scoped cluster of three real ``beanraft serve`` processes started with the
same auth file. On each of two nodes (the leader and a follower) one connection per role: none
(never authenticates), wrong (its token is wrong), producer (produce orders*), consumer (consume
orders*) and admin (administer *); a ``root`` principal holding every right prepares each cell
(a ready, buried, delayed or reserved job in ``orders``) and purges the tube after it. Each cell
sends the same bytes on every role's connection and compares the whole reply with the table.
The same cluster then serves the admin CLI (token from a file or the environment) and
beanraft.client with ``auth=``, which authenticates again after its node is killed (last: the
cluster is down a node afterwards).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from authkit import Line, Principals

from beanraft.client import Client, PermissionDeniedError, UnavailableError
from cluster.cluster_harness import Cluster, beanraft_argv

ROLES = ("none", "wrong", "producer", "consumer", "admin")
DENIED, REQUIRED = b"PERMISSION_DENIED\r\n", b"AUTH_REQUIRED\r\n"
TTR = 3600  # no reservation of the test runs out while it lasts


def ok_yaml(*lines: str) -> bytes:
    body = ("---\n" + "".join(f"{line}\n" for line in lines)).encode()
    return b"OK %d\r\n%b\r\n" % (len(body), body)


ANY_OK = re.compile(rb"OK \d+\r\n---\n.*\r\n", re.S)

# (name, setup, bytes to send, replies per role). The setup leaves job {id} in orders: "ready",
# "buried", "delayed", "held" (reserved by the consumer's own connection, or by root for the
# other roles), "secret" (ready in a tube only root and admin may see) or nothing.
# A reply is bytes (exact, {id} filled in) or a compiled pattern (whole match).
CELLS = [
    ("put", None, b"put 0 0 60 1\r\nx\r\n",
     {"producer": re.compile(rb"INSERTED \d+\r\n"), "consumer": DENIED, "admin": DENIED}),
    ("put-key", None, b"put-key k{id} 0 0 60 1\r\nx\r\n",
     {"producer": re.compile(rb"INSERTED \d+\r\n"), "consumer": DENIED, "admin": DENIED}),
    ("use a tube without rights", None, b"use secret\r\nuse orders\r\n",
     {"producer": DENIED + b"USING orders\r\n", "consumer": DENIED + b"USING orders\r\n",
      "admin": b"USING secret\r\nUSING orders\r\n"}),
    ("watch", None, b"watch orders\r\n",
     {"producer": DENIED, "consumer": b"WATCHING 1\r\n", "admin": DENIED}),
    ("watch a tube without rights", None, b"watch secret\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": DENIED}),
    ("ignore", None, b"ignore nothing\r\n",
     {"producer": b"WATCHING 1\r\n", "consumer": b"WATCHING 1\r\n", "admin": b"WATCHING 1\r\n"}),
    ("reserve-with-timeout", "ready", b"reserve-with-timeout 0\r\n",
     {"producer": DENIED, "consumer": b"RESERVED {id} 1\r\nx\r\n", "admin": DENIED}),
    ("reserve-job", "ready", b"reserve-job {id}\r\n",
     {"producer": DENIED, "consumer": b"RESERVED {id} 1\r\nx\r\n", "admin": DENIED}),
    ("delete a ready job", "ready", b"delete {id}\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"DELETED\r\n"}),
    ("delete a reserved job", "held", b"delete {id}\r\n",
     {"producer": DENIED, "consumer": b"DELETED\r\n", "admin": b"NOT_FOUND\r\n"}),
    ("delete a job in a hidden tube", "secret", b"delete {id}\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"NOT_FOUND\r\n", "admin": b"DELETED\r\n"}),
    ("delete a job that does not exist", None, b"delete 999999999\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"NOT_FOUND\r\n", "admin": b"NOT_FOUND\r\n"}),
    ("release", "held", b"release {id} 0 0\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"RELEASED\r\n", "admin": b"NOT_FOUND\r\n"}),
    ("bury", "held", b"bury {id} 0\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"BURIED\r\n", "admin": b"NOT_FOUND\r\n"}),
    ("touch", "held", b"touch {id}\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"TOUCHED\r\n", "admin": b"NOT_FOUND\r\n"}),
    ("peek", "ready", b"peek {id}\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"FOUND {id} 1\r\nx\r\n"}),
    ("peek-ready", "ready", b"peek-ready\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"FOUND {id} 1\r\nx\r\n"}),
    ("peek-delayed", "delayed", b"peek-delayed\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"FOUND {id} 1\r\nx\r\n"}),
    ("peek-buried", "buried", b"peek-buried\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"FOUND {id} 1\r\nx\r\n"}),
    ("kick", "buried", b"kick 10\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"KICKED 1\r\n"}),
    ("kick-job", "buried", b"kick-job {id}\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"KICKED\r\n"}),
    ("stats-job", "ready", b"stats-job {id}\r\n",
     {"producer": ANY_OK, "consumer": ANY_OK, "admin": ANY_OK}),
    ("stats-job in a hidden tube", "secret", b"stats-job {id}\r\n",
     {"producer": b"NOT_FOUND\r\n", "consumer": b"NOT_FOUND\r\n", "admin": ANY_OK}),
    ("stats-tube of its tube", None, b"stats-tube orders\r\n",
     {"producer": ANY_OK, "consumer": ANY_OK, "admin": ANY_OK}),
    ("stats-tube of another tube", None, b"stats-tube default\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": ANY_OK}),
    ("stats", None, b"stats\r\n", {"producer": ANY_OK, "consumer": ANY_OK, "admin": ANY_OK}),
    ("list-tubes", None, b"list-tubes\r\n",
     {"producer": ok_yaml("- orders"), "consumer": ok_yaml("- orders"),
      "admin": re.compile(rb"OK \d+\r\n---\n- default\n(- [a-z-]+\n)*- orders\n(- [a-z-]+\n)*\r\n")}),
    ("list-tube-used", None, b"list-tube-used\r\n",
     {"producer": b"USING orders\r\n", "consumer": b"USING orders\r\n",
      "admin": b"USING orders\r\n"}),
    ("list-tubes-watched", None, b"list-tubes-watched\r\n",
     {"producer": ok_yaml("- default"), "consumer": ok_yaml("- orders"),
      "admin": ok_yaml("- default")}),
    ("pause-tube", None, b"pause-tube orders 0\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"PAUSED\r\n"}),
    ("purge-tube", "ready", b"purge-tube orders ready\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"PURGED 1\r\n"}),
    ("list-jobs", "ready", b"list-jobs orders ready 0 10\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": ANY_OK}),
    ("move-job", "ready", b"move-job {id} orders-b\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"MOVED 1\r\n"}),
    ("move-buried", "buried", b"move-buried orders orders-b\r\n",
     {"producer": DENIED, "consumer": DENIED, "admin": b"MOVED 1\r\n"}),
    ("session-id", None, b"session-id\r\n",
     {role: re.compile(rb"SESSION \S+\r\n") for role in ("producer", "consumer", "admin")}),
    ("a malformed line", None, b"put x\r\n",
     {role: b"BAD_FORMAT\r\n" for role in ROLES}),
    ("an unknown command", None, b"frobnicate\r\n",
     {role: b"UNKNOWN_COMMAND\r\n" for role in ROLES}),
]


@pytest.fixture(scope="module")
def principals() -> Principals:
    team = Principals()
    team.add("producer", produce=["orders*"])
    team.add("consumer", consume=["orders*"])
    team.add("admin", administer=["*"])
    team.add("root", produce=["*"], consume=["*"], administer=["*"])
    return team


@pytest.fixture(scope="module")
def cluster(request, principals, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authcluster")
    path = principals.write(workdir / "auth.toml")
    cluster = Cluster(workdir, size=3, extra_args=("--auth-file", str(path)))
    request.module._running_cluster = cluster
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class Node:
    """The role connections of one node, and root's."""

    def __init__(self, address, principals: Principals):
        self.root = Line(address)
        assert self.root.auth("root", principals.tokens["root"]) == b"AUTHENTICATED\r\n"
        self.root.request(b"use orders\r\nwatch orders\r\n", 2)
        self.roles = {role: Line(address) for role in ROLES}
        for role in ("producer", "consumer", "admin"):
            assert self.roles[role].auth(role, principals.tokens[role]) == b"AUTHENTICATED\r\n"
            assert self.roles[role].request(b"use orders\r\n") == b"USING orders\r\n"
        assert self.roles["consumer"].request(b"watch orders\r\nignore default\r\n", 2) == \
            b"WATCHING 2\r\nWATCHING 1\r\n"
        assert self.roles["wrong"].auth("consumer", "not-the-token") == b"AUTH_FAILED\r\n"

    def setup(self, kind: str | None, role: str) -> int:
        root = self.root
        if kind is None:
            return 0
        tube = "secret" if kind == "secret" else "orders"
        delay = 3600 if kind == "delayed" else 0
        reply = root.request(b"use %b\r\nput 0 %d %d 1\r\nx\r\nuse orders\r\n"
                             % (tube.encode(), delay, TTR), 3)
        job_id = int(re.search(rb"INSERTED (\d+)", reply).group(1))
        if kind == "buried":
            assert root.request(b"reserve-job %d\r\nbury %d 0\r\n" % (job_id, job_id), 2).endswith(
                b"BURIED\r\n")
        elif kind == "held":
            holder = self.roles["consumer"] if role == "consumer" else root
            assert holder.request(b"reserve-job %d\r\n" % job_id).startswith(b"RESERVED")
        return job_id

    def clean(self) -> None:
        self.root.request(b"purge-tube orders all\r\npurge-tube orders-b all\r\n"
                          b"purge-tube secret all\r\n", 3)

    def close(self) -> None:
        for line in [self.root, *self.roles.values()]:
            line.close()


def expected_reply(cells: dict, role: str) -> bytes | re.Pattern:
    if role in cells:
        return cells[role]
    return REQUIRED  # none and wrong: nothing happens before authentication


def check_node(node: Node, failures: list[str], where: str) -> None:
    for name, kind, data, replies in CELLS:
        for role in ROLES:
            job_id = node.setup(kind, role)
            wanted = expected_reply(replies, role)
            count = data.count(b"\r\n") - (1 if data.startswith(b"put") and b"\r\nx\r\n" in data else 0)
            if wanted is REQUIRED:
                wanted = REQUIRED * count
            got = node.roles[role].request(data.replace(b"{id}", b"%d" % job_id), count)
            if isinstance(wanted, bytes):
                ok = got == wanted.replace(b"{id}", b"%d" % job_id)
            else:
                ok = wanted.fullmatch(got) is not None
            if not ok:
                failures.append(f"{where} {role} {name}: got {got!r}, wanted {wanted!r}")
            node.clean()


def test_every_command_gets_the_replies_of_the_matrix_on_the_leader_and_a_follower(
        cluster, principals):
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    failures: list[str] = []
    for where, process in (("follower", follower), ("leader", leader)):
        node = Node(process.client_address, principals)
        try:
            check_node(node, failures, where)
        finally:
            node.close()
    assert not failures, "\n".join(failures)


def test_the_admin_cli_takes_the_token_from_a_file_or_the_environment(cluster, principals, tmp_path):
    address = "%s:%d" % cluster.nodes[0].client_address
    keeper = Line(cluster.nodes[0].client_address)  # keeps tube orders in existence
    assert keeper.auth("root", principals.tokens["root"]) == b"AUTHENTICATED\r\n"
    assert keeper.request(b"use orders\r\n") == b"USING orders\r\n"
    token_file = tmp_path / "admin.token"
    token_file.write_text(principals.tokens["admin"] + "\n")
    os.chmod(token_file, 0o600)
    listed = run_cli("tube", "list", "--address", address, "--principal", "admin",
                     "--token-file", str(token_file), "--json")
    assert listed.returncode == 0, listed.stderr
    assert "default" in json.loads(listed.stdout)
    env = {"BEANRAFT_PRINCIPAL": "producer", "BEANRAFT_TOKEN": principals.tokens["producer"]}
    denied = run_cli("tube", "stats", "default", "--address", address, env=env)
    assert denied.returncode == 4 and "permission denied" in denied.stderr, denied.stderr
    mine = run_cli("tube", "list", "--address", address, "--json", env=env)
    assert mine.returncode == 0 and json.loads(mine.stdout) == ["orders"], mine.stdout + mine.stderr
    unauthenticated = run_cli("tube", "list", "--address", address)
    assert unauthenticated.returncode == 4 and "requires authentication" in unauthenticated.stderr
    wrong = run_cli("tube", "list", "--address", address, env={**env, "BEANRAFT_TOKEN": "nope"})
    assert wrong.returncode == 4 and "refused the authentication" in wrong.stderr, wrong.stderr
    keeper.close()


def test_the_client_authenticates_again_after_failing_over(cluster, principals):
    leader = cluster.leader()
    first, other = [n for n in cluster.nodes if n is not leader]
    addresses = ["%s:%d" % n.client_address for n in (first, other)]
    with Client(addresses, auth=("root", principals.tokens["root"]), use="failover",
                watch="failover", failover_timeout=30) as client:
        client.put("before")
        connected = next(n for n in (first, other) if n.client_address == tuple(client.address))
        cluster.kill(connected)
        client.put("after")  # through the other node, authenticated anew
        assert client.failovers == 1
        bodies = sorted(client.reserve(timeout=5).body for _ in range(2))
    assert bodies == ["after", "before"]
    alive = next(a for a, n in zip(addresses, (first, other)) if n is not connected)
    with pytest.raises(UnavailableError, match="authentication as root refused"):
        Client([alive], auth=("root", "wrong"), timeout=10, failover_timeout=4)
    with pytest.raises(PermissionDeniedError):
        with Client([alive], auth=("producer", principals.tokens["producer"])) as client:
            client.put("default is not the producer's tube")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BEANRAFT_")}
    full_env.update(env or {})
    return subprocess.run([*beanraft_argv(), *args], capture_output=True, text=True,
                          timeout=60, env=full_env)
