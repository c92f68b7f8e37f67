"""Flower and a worker as docker-compose.yml runs them: the same commands (queues, port and
address adjusted for an isolated test), the env template's ``FLOWER_BASIC_AUTH``, the real
broker. Flower refuses to start without credentials and requests without them; its Prometheus
metrics report the worker online (workers send events and heartbeats)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from pipeline.credentials import new_secret
from tests.deploy.deployfiles import (
    REPO,
    Process,
    active_env,
    as_argv,
    free_port,
    load_compose,
    run_healthcheck,
    subprocess_env,
)
from tests.fixtures.celery import CeleryTestEnv

TIMEOUT = 5  # seconds, per request


def _flower_script(port: int) -> str:
    argv = as_argv(load_compose()["services"]["flower"]["command"])
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    assert "--address=0.0.0.0" in script and "--port=5555" in script
    return script.replace("--address=0.0.0.0", "--address=127.0.0.1").replace(
        "--port=5555", f"--port={port}"
    )


def _worker_argv(celery_env: CeleryTestEnv, hostname: str) -> list[str]:
    argv = as_argv(load_compose()["services"]["worker"]["command"])
    assert argv[:3] == ["celery", "-A", "tasks.app"]
    argv[argv.index("-Q") + 1] = ",".join(celery_env.queues)  # the namespaced names
    return [sys.executable, "-m", "celery", *argv[1:], "-n", hostname, "-c", "1"]


def test_flower_refuses_to_start_without_credentials(celery_env: CeleryTestEnv) -> None:
    env = subprocess_env(celery_env.env())
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = subprocess.run(
        ["sh", "-c", _flower_script(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 78
    assert "FLOWER_BASIC_AUTH is empty" in proc.stderr
    env["FLOWER_BASIC_AUTH"] = "admin:CHANGE_ME_flower_password"  # the old template's value
    proc = subprocess.run(
        ["sh", "-c", _flower_script(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 78 and "is a placeholder" in proc.stderr
    assert active_env()["FLOWER_BASIC_AUTH"] == ""  # the template ships no usable password


@pytest.mark.timeout(180)
def test_flower_basic_auth_and_worker_metrics(celery_env: CeleryTestEnv, tmp_path: Path) -> None:
    credentials = f"admin:{new_secret()}"  # as an operator makes one
    user, _, password = credentials.partition(":")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hostname = f"{celery_env.namespace}-{uuid.uuid4().hex[:6]}@localhost"
    flower = Process(
        ["sh", "-c", _flower_script(port)],
        subprocess_env(celery_env.env(FLOWER_BASIC_AUTH=credentials)),
        tmp_path / "flower.log",
    )
    worker = Process(_worker_argv(celery_env, hostname), celery_env.env(), tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert flower.alive(), flower.log()
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/healthcheck", timeout=TIMEOUT).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Flower did not come up"
            time.sleep(0.2)

        assert requests.get(f"{base}/", timeout=TIMEOUT).status_code == 401
        assert requests.get(f"{base}/", auth=(user, "wrong"), timeout=TIMEOUT).status_code == 401
        assert requests.get(f"{base}/workers", timeout=TIMEOUT).status_code == 401
        page = requests.get(f"{base}/workers", auth=(user, password), timeout=TIMEOUT)
        assert page.status_code == 200

        online = f'flower_worker_online{{worker="{hostname}"}} 1.0'
        deadline = time.monotonic() + 60
        while True:
            assert worker.alive(), worker.log()
            metrics = requests.get(f"{base}/metrics", timeout=TIMEOUT)  # open, as documented
            assert metrics.status_code == 200
            if online in metrics.text:
                break
            assert time.monotonic() < deadline, f"no {online!r} in /metrics:\n{metrics.text}"
            time.sleep(0.5)

        # The compose health checks, as Docker runs them in each container.
        services = load_compose()["services"]
        flower_check = run_healthcheck(services["flower"], celery_env.env(), {"5555": str(port)})
        assert flower_check.returncode == 0, flower_check.stderr
        # Flower sees the worker before its control consumer listens, and a broadcast sent
        # then is lost (Redis pub/sub): ping once the worker says it is ready, as Docker does
        # after the health check's start period.
        assert worker.wait_for_log(f"{hostname} ready.", 60), worker.log()
        worker_env = celery_env.env(HOSTNAME=hostname.partition("@")[2])
        name = {"celery@$HOSTNAME": hostname}
        ping = run_healthcheck(services["worker"], worker_env, name)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        nobody = {"celery@$HOSTNAME": f"nobody-{hostname}", "--timeout 10": "--timeout 1"}
        assert run_healthcheck(services["worker"], worker_env, nobody).returncode != 0
    finally:
        worker.stop()
        flower.stop()
