"""A three-node cluster with TLS on every node's client and HTTP ports serves through a follower.

Method: three real ``beanraft serve`` processes, each with its own certificate from one private
CA (Raft traffic between them stays sealed with the cluster secret); the roles are read from
/status over HTTPS. ``beanraft.client`` with ``tls=`` puts through one follower and reserves
and deletes through the other, and a plaintext HTTP request to a node is refused.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from tlskit import HOST, Pki, TlsNode, clean_env, http_get, tls_flags

from beanraft.client import Client
from beanraft.node import launcher


def https_status(node: TlsNode, context) -> dict | None:
    try:
        return json.loads(http_get(f"https://{HOST}:{node.spec.http_port}/status", context, 2))
    except OSError:
        return None


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(pki, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    ports = launcher.free_ports(9)
    specs = launcher.local_specs(3, workdir, ports[0:3], ports[3:6], ports[6:9])
    env = clean_env(BEANRAFT_CLUSTER_SECRET=secrets.token_urlsafe(32))
    nodes = [TlsNode(spec, [s.raft for s in specs if s is not spec],
                     tls_flags(*pki.server_files(spec.name)), workdir, env) for spec in specs]
    for node in nodes:
        node.start()
    try:
        for node in nodes:
            node.wait_ready(pki.client_context())
        deadline = time.monotonic() + 30
        while not all((https_status(n, pki.client_context()) or {}).get("ready") for n in nodes):
            assert time.monotonic() < deadline, "the TLS cluster did not become ready"
            time.sleep(0.1)
        yield nodes
    finally:
        launcher.stop_all(nodes)


def test_a_tls_client_puts_and_reserves_through_the_followers(cluster, pki):
    context = pki.client_context()
    roles = {n.name: https_status(n, context)["role"] for n in cluster}
    followers = [n for n in cluster if roles[n.name] == "follower"]
    assert len(followers) == 2, roles
    producer_node, consumer_node = followers
    with Client((HOST, producer_node.spec.client_port), use="tls-cluster", tls=context,
                failover_timeout=10) as producer:
        job_id = producer.put("through a follower")
    with Client((HOST, consumer_node.spec.client_port), watch="tls-cluster", tls=context,
                failover_timeout=10) as consumer:
        job = consumer.reserve(timeout=5)
        assert (job.id, job.body) == (job_id, "through a follower")
        consumer.delete(job)


def test_every_node_refuses_plain_http(cluster):
    for node in cluster:
        with pytest.raises(OSError):
            http_get(f"http://{HOST}:{node.spec.http_port}/status")
