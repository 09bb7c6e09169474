"""Fixtures for tests that run real three-process BeanRaft clusters on loopback.

Method: ``cluster`` starts three ``beanraft serve`` processes with fresh data directories and a
shared secret and returns once every node's /readyz answers 200; ``start_cluster`` does the same
on demand (with extra flags). Every process is stopped by its PID at teardown, and the logs of
every node are attached to the report of a failing test. Flags for the ``cluster`` fixture come
from ``@pytest.mark.cluster_args("--node-grace", "2")``.
"""

from __future__ import annotations

import socket

import greenstalk
import pytest
from cluster_harness import Cluster, NodeProcess

_CLUSTERS = pytest.StashKey[list]()


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster_args(*args): extra `beanraft serve` flags for every node")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for number, cluster in enumerate(item.stash.get(_CLUSTERS, []), 1):
            report.sections.append((f"cluster {number} node logs", cluster.logs()))


@pytest.fixture
def start_cluster(request, tmp_path):
    """Factory: ``start_cluster(*args, size=3, **kw) -> Cluster`` (ready; ``kw`` as for
    ``Cluster``); all are stopped at teardown."""
    clusters: list[Cluster] = request.node.stash.setdefault(_CLUSTERS, [])

    def start(*args: str, size: int = 3, **kwargs) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(clusters) + 1}", size=size, extra_args=args,
                          **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def cluster(request, start_cluster) -> Cluster:
    """A ready three-node cluster with the flags of the closest ``cluster_args`` marker."""
    marker = request.node.get_closest_marker("cluster_args")
    return start_cluster(*(str(a) for a in marker.args) if marker else ())


@pytest.fixture
def clients():
    """Factory: ``clients(node, **kw) -> greenstalk.Client`` on that node; all closed at teardown."""
    opened: list[greenstalk.Client] = []

    def connect(node: NodeProcess, **kwargs) -> greenstalk.Client:
        # A socket with a timeout: a lost reply fails the test instead of hanging it.
        sock = socket.create_connection(node.client_address, timeout=20)
        client = greenstalk.Client(sock, **kwargs)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        try:
            client.close()
        except OSError:
            pass
