"""Adds the compose project's container logs to the report of a failing test in this folder.

A test module opts in by defining ``compose_logs() -> str``; the hook calls it while the cluster
is still up, before the module's fixtures tear it down.
"""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    compose_logs = getattr(item.module, "compose_logs", None)
    if report.when == "call" and report.failed and compose_logs is not None:
        report.sections.append(("docker compose logs", compose_logs()))
