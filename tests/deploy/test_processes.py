"""web and zohosim started with their compose commands (port and address adjusted), checked
with their compose health checks: healthy while they serve, unhealthy once they are gone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.deploy.deployfiles import Process, as_argv, free_port, load_compose, run_healthcheck
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
