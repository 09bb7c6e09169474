"""Fixtures of the beanraft.client tests, shared by a module's tests (module scope).

``plain_target`` is the real beanstalkd 1.12 and one BeanRaft node (parametrized), started once
per module; tests keep apart by their own tubes (``tube``). ``client_cluster`` is a three-node
BeanRaft cluster started once per module; tests that kill or freeze a node revive it before
they end.
"""

from __future__ import annotations

import pytest
from client_harness import ServerProcess, unique_tube

from cluster.cluster_harness import Cluster


@pytest.fixture
def tube(request) -> str:
    return unique_tube(request.node.name)


@pytest.fixture(scope="module", params=["beanstalkd", "beanraft"])
def plain_target(request, tmp_path_factory):
    server = ServerProcess(request.param, tmp_path_factory.mktemp(request.param)).start()
    yield server
    server.stop()


# A restart on a loaded machine can take longer than the default 5 s; the sessions of a node that
# restarts within the grace must outlive the restart, which is what the tests check.
NODE_GRACE_S = 15


@pytest.fixture(scope="module")
def client_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), size=3,
                      extra_args=("--node-grace", str(NODE_GRACE_S))).start()
    yield cluster
    cluster.stop()
