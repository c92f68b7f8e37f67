"""deploy/grafana: docker-compose.yml provisions the datasource and the dashboard next to
Prometheus, and every metric the dashboard's queries name is one the web's ``/metrics`` really
exports (scraped from the real endpoint over HTTP, on a real ledger)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.web import make_http_server, make_wsgi_app
from pipeline.ledger import RowError
from pipeline.metrics import wsgi_app
from pipeline.settings import Settings
from tests.cli.helpers import add_errors
from tests.deploy.deployfiles import REPO, load_compose

GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "ordersync.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "ordersync.yml"
# PromQL words that are not metric names: functions are followed by "(", so only these remain
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset"}  # fmt: skip


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = REPO / source
    return found


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (selectors, not functions or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in PROMQL_WORDS:
            names.add(word)
    return names


def test_metric_names_of_a_query() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le) (increase(ordersync_job_duration_seconds_bucket"
        '{state!~"a|b"}[1h]))) / max(ordersync_x) + on (code) group_left ordersync_y'
    )
    assert metric_names(expr) == {"ordersync_job_duration_seconds_bucket", "ordersync_x",
                                  "ordersync_y"}  # fmt: skip


def test_compose_provisions_the_datasource_and_the_dashboard() -> None:
    services = load_compose()["services"]
    grafana, prometheus = services["grafana"], services["prometheus"]
    assert grafana.get("profiles") == prometheus.get("profiles") == ["monitoring"]
    assert "prometheus" in grafana.get("depends_on", [])
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"
    for volume in grafana["volumes"]:
        if volume.startswith("./"):
            assert volume.endswith(":ro"), f"grafana mounts {volume} read-only"
    for port in grafana.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), "grafana published on all addresses"

    sources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    (source,) = sources
    prom_port = prometheus["ports"][0].rsplit(":", 1)[1]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prom_port}"

    (provider,) = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent, "the dashboards are mounted"

    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"], panel
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_what_the_operator_watches() -> None:
    queried = set().union(*map(metric_names, _exprs(_dashboard())))
    assert {
        "ordersync_credits_spent_24h", "ordersync_credits_budget_24h",  # credits vs budget
        "ordersync_pending_rows", "ordersync_oldest_pending_age_seconds",  # backlog, its age
        "ordersync_rows_in_error_by_code",  # rows refused, by code
        "ordersync_job_duration_seconds_bucket",  # job durations
    } <= queried


def _serve(settings: Settings) -> Iterator[str]:
    app = make_wsgi_app(
        lookup=lambda token: None, enqueue=lambda batch_id: None, checks={},
        metrics=wsgi_app(settings),
    )  # fmt: skip
    server = make_http_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metrics_url(legacy_db: Settings) -> Iterator[str]:
    yield from _serve(legacy_db)


def test_every_metric_the_dashboard_queries_is_exported(
    legacy_db: Settings, metrics_url: str
) -> None:
    add_errors(legacy_db, [RowError("20", "INVALID_DATA", "Email", "bad")])
    response = requests.get(metrics_url, timeout=10)
    assert response.status_code == 200
    exported = {
        sample.name
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert "ordersync_rows_in_error_by_code" in exported  # the scrape read the ledger
    for expr in _exprs(_dashboard()):
        missing = metric_names(expr) - exported
        assert not missing, f"the dashboard queries {sorted(missing)}, /metrics has no such metric"
