"""web and zohosim started with their compose commands (port and address adjusted), checked
with their compose health checks: healthy while they serve, unhealthy once they are gone."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path

import requests

from pipeline.settings import Settings
from tests.deploy.deployfiles import Process, as_argv, free_port, load_compose, run_healthcheck
from tests.deploy.test_prometheus import OUR_METRICS
from tests.fixtures.celery import CeleryTestEnv

EXISTING_DB = "postgresql://postgres@127.0.0.1:5432/postgres"  # /healthz only runs SELECT 1


def _command(service: str, port: int, compose_port: str) -> list[str]:
    argv = as_argv(load_compose()["services"][service]["command"])
    argv = ["127.0.0.1" if a == "0.0.0.0" else str(port) if a == compose_port else a for a in argv]
    if argv[0] == "python":
        argv[0] = sys.executable
    else:
        argv[0] = str(Path(sys.executable).parent / argv[0])
    return argv


def test_web_and_zohosim_health_checks(celery_env: CeleryTestEnv, tmp_path: Path) -> None:
    services = load_compose()["services"]
    env = celery_env.env(ORDERSYNC_SOURCE_DSN=EXISTING_DB)
    web_port, sim_port = free_port(), free_port()
    checks = {
        "web": {"8080": str(web_port)},
        "zohosim": {"8010": str(sim_port)},
    }
    started = {
        "web": Process(_command("web", web_port, "8080"), env, tmp_path / "web.log"),
        "zohosim": Process(_command("zohosim", sim_port, "8010"), env, tmp_path / "sim.log"),
    }
    try:
        for name, process in started.items():
            deadline = time.monotonic() + 60
            while True:
                assert process.alive(), process.log()
                result = run_healthcheck(services[name], env, checks[name])
                if result.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"{name} never healthy:\n{result.stderr}"
                time.sleep(0.3)
    finally:
        for process in started.values():
            process.stop()
    for name in started:
        assert run_healthcheck(services[name], env, checks[name]).returncode != 0


# The metric types the alert rules (deploy/prometheus/alerts.yml) rely on.
METRIC_TYPES = {
    "ordersync_credits_spent_24h": "gauge",
    "ordersync_credits_left_24h": "gauge",
    "ordersync_credits_budget_24h": "gauge",
    "ordersync_pending_rows": "gauge",
    "ordersync_oldest_pending_age_seconds": "gauge",
    "ordersync_rows_synced_total": "counter",
    "ordersync_rows_in_error": "gauge",
    "ordersync_rows_in_error_by_code": "gauge",
    "ordersync_rows_quarantined": "gauge",
    "ordersync_batches": "gauge",
    "ordersync_batch_stuck": "gauge",
    "ordersync_job_duration_seconds": "histogram",
    "ordersync_verify_age_seconds": "gauge",
    "ordersync_verify_found": "gauge",
    "ordersync_deletes_pending": "gauge",
    "ordersync_deletes_over_cap": "gauge",
}
# Exposed only once a verification has finished (tests/ongoing/test_verify.py checks them), and
# only with sync.deletes on (tests/ongoing/test_deletes.py checks those).
AFTER_A_VERIFICATION = {"ordersync_verify_age_seconds", "ordersync_verify_found",
                        "ordersync_deletes_pending", "ordersync_deletes_over_cap"}


def test_web_metrics_are_the_ones_the_alerts_use(
    celery_env: CeleryTestEnv, legacy_db: Settings, tmp_path: Path
) -> None:
    assert set(METRIC_TYPES) == OUR_METRICS
    env = celery_env.env(ORDERSYNC_SOURCE_DSN=legacy_db.source.dsn.reveal())
    port = free_port()
    web = Process(_command("web", port, "8080"), env, tmp_path / "web.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert web.alive(), web.log()
            with contextlib.suppress(requests.ConnectionError):
                response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
                break
            assert time.monotonic() < deadline, "web did not come up"
            time.sleep(0.2)
    finally:
        web.stop()
    assert response.status_code == 200, response.text
    types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", response.text))
    for name, kind in METRIC_TYPES.items():
        if name in AFTER_A_VERIFICATION:
            continue
        exposed = types.get(name) or types.get(name.removesuffix("_total"))
        assert exposed == kind, f"/metrics: {name} is {exposed}, the alerts expect a {kind}"
