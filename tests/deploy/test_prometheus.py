"""deploy/prometheus: the scrape targets are the compose services, the alert rules use the
agreed metric names, cover what the runbook promises, and fire when they should
(``promtool test rules`` where promtool is installed; Debian: ``apt-get install prometheus``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.deployfiles import ENV_FILE, PROMETHEUS_DIR, RUNBOOK, as_argv, load_compose
from tests.fixtures.tools import requires_tool

PROMTOOL = requires_tool("promtool", "Debian: apt-get install prometheus")

# The metrics the web process exposes at /metrics (agreed names) and Flower's that we use.
OUR_METRICS = {
    "ordersync_credits_spent_24h",
    "ordersync_credits_left_24h",
    "ordersync_credits_budget_24h",
    "ordersync_pending_rows",
    "ordersync_oldest_pending_age_seconds",
    "ordersync_rows_synced_total",
    "ordersync_rows_in_error",
    "ordersync_rows_in_error_by_code",
    "ordersync_rows_quarantined",
    "ordersync_batches",
    "ordersync_batch_stuck",
    "ordersync_job_duration_seconds",
    "ordersync_verify_age_seconds",
    "ordersync_verify_found",
    "ordersync_deletes_pending",
    "ordersync_deletes_over_cap",
}
FLOWER_METRICS = {"flower_worker_online"}
SEVERITIES = {"info", "warning", "critical"}
# What the alerts must watch (issue 7): backlog age, rejection rate, credits left, stuck
# batches, no worker.
REQUIRED = {
    "OrdersyncBacklogOld": "ordersync_oldest_pending_age_seconds",
    "OrdersyncRejectionRateHigh": "ordersync_rows_in_error",
    "OrdersyncCreditsLow": "ordersync_credits_left_24h",
    "OrdersyncBatchesStuck": "ordersync_batch_stuck",
    "OrdersyncNoWorker": "flower_worker_online",
}
TEST_FILE = Path(__file__).with_name("alerts_test.yml")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROMETHEUS_DIR / name).read_text(encoding="utf-8"))


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load("alerts.yml")["groups"] for rule in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_scrape_targets_are_the_compose_services() -> None:
    config = _load("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = load_compose()["services"]
    ports = {
        "web": as_argv(services["web"]["command"]),
        "flower": " ".join(as_argv(services["flower"]["command"])),
    }
    for job, service in (("ordersync-web", "web"), ("ordersync-flower", "flower")):
        assert jobs[job]["metrics_path"] == "/metrics"
        (target,) = jobs[job]["static_configs"][0]["targets"]
        host, _, port = target.partition(":")
        assert host == service, f"{job} scrapes {host}, not the compose service {service}"
        assert port in str(ports[service]), f"{job}: {service} does not listen on {port}"
    volumes = services["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in volumes


def test_alert_rules_shape_and_metric_names() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    anchors = _anchors(RUNBOOK.read_text(encoding="utf-8"))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Ordersync[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (
            f"{rule['alert']}: {runbook} is not a heading of docs/runbook.md"
        )
        for metric in re.findall(r"\b((?:ordersync|flower)_[a-z0-9_]+)", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            assert base in OUR_METRICS | FLOWER_METRICS, f"{rule['alert']}: unknown {metric}"
    by_name = {rule["alert"]: rule for rule in rules}
    for alert, metric in REQUIRED.items():
        assert metric in by_name[alert]["expr"], f"{alert} must watch {metric}"
    states = re.findall(r'ordersync_batches\{state="(\w+)"\}', _joined(rules))
    from pipeline.ledger import BatchState

    assert set(states) <= {s.value for s in BatchState}


def _joined(rules: list[dict[str, Any]]) -> str:
    return "\n".join(rule["expr"] for rule in rules)


@PROMTOOL
def test_promtool_checks_config_and_rules() -> None:
    proc = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(_rules())} rules found" in proc.stdout


@PROMTOOL
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """promtool unit tests (alerts_test.yml) on the rules without their annotations."""
    document = _load("alerts.yml")
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document), encoding="utf-8")
    shutil.copy(TEST_FILE, tmp_path / TEST_FILE.name)
    tested = set(re.findall(r"alertname: (\w+)", TEST_FILE.read_text(encoding="utf-8")))
    assert tested == {rule["alert"] for rule in _rules()}, "every alert has a promtool test"
    proc = subprocess.run(
        ["promtool", "test", "rules", TEST_FILE.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runbook_links_resolve() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = _anchors(text)
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, f"docs/runbook.md links to a missing heading #{target}"
    for path in re.findall(r"`((?:deploy|docs|tests)/[\w./-]+)`", text):
        if path == ENV_FILE:  # made from the example by the operator, never committed
            continue
        assert (RUNBOOK.parents[1] / path).exists(), f"docs/runbook.md names a missing {path}"
