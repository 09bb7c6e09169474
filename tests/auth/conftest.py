"""Fixtures of the authentication tests: the node logs of a module's cluster are attached to the
report of a failing test."""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        cluster = getattr(item.module, "_running_cluster", None)
        if cluster is not None:
            report.sections.append(("cluster node logs", cluster.logs()))
