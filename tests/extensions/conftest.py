"""Fixtures for the real-process tests of BeanRaft's extensions (put-key, session-id,
session-resume): one three-node ``beanraft serve`` cluster per test module, and a small client
that speaks the extensions over raw bytes.

Method: ``extension_cluster`` starts a ``Cluster`` (tests/cluster/cluster_harness.py) with the
flags of the module's ``CLUSTER_ARGS`` and stops every process by its PID at the end of the
module; the logs of every node are attached to the report of a failing test.
"""

from __future__ import annotations

import pytest

from cluster.cluster_harness import Cluster
from ext_client import ExtClient

_CLUSTERS = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        cluster = getattr(item.module, "_running_cluster", None)
        if cluster is not None:
            report.sections.append(("cluster node logs", cluster.logs()))


@pytest.fixture(scope="module")
def extension_cluster(request, tmp_path_factory) -> Cluster:
    """A ready three-node cluster shared by the tests of one module."""
    args = tuple(getattr(request.module, "CLUSTER_ARGS", ()))
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), size=3, extra_args=args)
    request.module._running_cluster = cluster
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def connect():
    """Factory: ``connect(node) -> ExtClient`` on that node's client port; all closed at teardown."""
    opened: list[ExtClient] = []

    def make(node) -> ExtClient:
        client = ExtClient(node.client_address, timeout_s=20)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
