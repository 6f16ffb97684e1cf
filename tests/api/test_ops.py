"""The Prometheus alert rules and the Grafana dashboard (docs/monitoring/) stay valid and built on what /metrics
really exports: `promtool check rules`, `promtool test rules` (one test per rule's expression), and every metric
they name is one a scrape of this app carries."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.db import insert_jobs
from tests.support.settings import AUTH

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
METRIC = re.compile(r"\b(jobprocessor_[a-z_]+)")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool is missing: install Debian's package: sudo apt-get install prometheus"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (.ci/run installs it; in CI this never skips)", pytrace=False)
    pytest.skip(message)


def test_the_rules_are_valid():
    result = subprocess.run([_promtool(), "check", "rules", str(MONITORING / "alerts.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_rule_fires_when_it_should_and_not_before():
    result = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=MONITORING, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = re.findall(r"^\s*- alert: (\w+)", (MONITORING / "alerts.yml").read_text(), re.MULTILINE)
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text()))
    assert set(rules) <= tested, set(rules) - tested


def test_the_rules_and_the_dashboard_use_only_metrics_the_app_exports(client, engine):
    insert_jobs(engine, 2)
    client.post("/process-pending", headers=AUTH)  # a tick, so that the last tick's age is exported
    scraped = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    # samples, and the families declared without one yet (a labelled counter before its first event)
    exported = set(re.findall(r"^(?:# TYPE )?(jobprocessor_[a-z_]+)", scraped, re.MULTILINE))
    # histograms and counters: _bucket/_total are exported once a sample exists; the family's name is enough
    families = exported | {re.sub(r"_(bucket|sum|count|total|created)$", "", name) for name in exported}
    rules = "\n".join(line for line in (MONITORING / "alerts.yml").read_text().splitlines()
                      if not line.strip().startswith("#"))
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = rules + "\n".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    named = set(METRIC.findall(exprs))
    unknown = {m for m in named if m not in families and re.sub(r"_(bucket|total)$", "", m) not in families}
    assert not unknown, f"not in a scrape of /metrics: {sorted(unknown)}"
