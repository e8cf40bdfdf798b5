"""The shipped Grafana dashboard queries only metrics the processes actually export."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "lotabots.json"
EXPORTERS = ("gateway.metrics", "gateway.limits.metrics", "consumers.inference_worker", "consumers.autoscaler",
             "lotabots.usage_metrics", "lotabots.usage_events")


def test_every_dashboard_query_names_an_exported_metric() -> None:
    for module in EXPORTERS:
        importlib.import_module(module)
    exported = {name for metric in REGISTRY.collect() for name in
                (metric.name, f"{metric.name}_total", f"{metric.name}_bucket", f"{metric.name}_sum",
                 f"{metric.name}_count")}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"\blotabots_[a-z_]+", e)}
    assert len(exprs) >= 20 and used
    assert used <= exported, f"not exported by any process: {sorted(used - exported)}"
    titles = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert titles == {"Gateway", "Inference", "Usage pipeline"}
