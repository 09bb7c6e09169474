"""The alert rules and the Grafana dashboard in compose/monitoring hold up against promtool and a real node.

Method: promtool (Debian package prometheus) checks the rules and the Prometheus configuration
and runs the rules' unit tests (alerts_test.yml); the dashboard's queries are checked as PromQL
by promtool too, wrapped in recording rules. Then every metric name that a rule or a dashboard
query uses must appear in the /metrics of a real `beanraft serve` node that served a command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from cluster_harness import LineClient, wait_for

MONITORING = Path(__file__).resolve().parents[2] / "compose" / "monitoring"
PROMTOOL = "/usr/bin/promtool"
METRIC_NAME = re.compile(r"\bbeanraft_[a-z0-9_]+\b")

needs_promtool = pytest.mark.skipif(not os.path.exists(PROMTOOL),
                                    reason=f"{PROMTOOL} is missing (Debian package prometheus)")


def promtool(*args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rule_expressions() -> list[str]:
    text = (MONITORING / "alerts.yml").read_text()
    # The rules file is YAML; every expression is one `expr:` line (kept so on purpose).
    return [line.split("expr:", 1)[1].strip() for line in text.splitlines()
            if line.strip().startswith("expr:")]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


@needs_promtool
def test_the_alert_rules_pass_promtool_check_and_their_unit_tests():
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
    promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_the_dashboard_queries_are_valid_promql(tmp_path):
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"beanraft_dashboard_query_{i}", "expr": expr} for i, expr in enumerate(expressions)]}]}
    (tmp_path / "queries.yml").write_text(json.dumps(rules))  # JSON is YAML
    assert f"SUCCESS: {len(expressions)} rules found" in promtool("check", "rules", "queries.yml", cwd=tmp_path)


def exported_names(metrics_text: str) -> set[str]:
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_the_rules_and_the_dashboard_use_is_exported_by_a_node(start_cluster):
    node = start_cluster(size=1).nodes[0]
    with LineClient(node.client_address) as client:
        client.put(b"a job")  # labelled counters appear once they count something
    code, text = node.http("/metrics")
    assert code == 200
    exported = exported_names(text)
    used = {name for expr in rule_expressions() + dashboard_expressions()
            for name in METRIC_NAME.findall(expr)}
    assert len(used) >= 10, used
    assert sorted(used - exported) == []
    assert gauge(text, "beanraft_disk_free_bytes") > 0
    # The job put above waits; its age shows (the figure is cached for 0.1 s at most).
    wait_for("the ready job's age", lambda: gauge(node.http("/metrics")[1], "beanraft_oldest_ready_seconds") >= 1.0, 10.0)


def gauge(metrics_text: str, name: str) -> float:
    values = [line.split()[1] for line in metrics_text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, name
    return float(values[0])
