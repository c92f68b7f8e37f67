"""``make demo``'s script end to end, small: a private database, namespace, directory and ports."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest
import redis
import requests

from tests.fixtures.db import drop_database
from tests.ops.helpers import REPO


@pytest.mark.timeout(300)
def test_demo_script_runs_through_and_stops_what_it_started(tmp_path: Path) -> None:
    database = f"ordersync_demotest_{uuid.uuid4().hex[:12]}"
    namespace = f"t{uuid.uuid4().hex[:12]}"
    argv = [
        sys.executable, str(REPO / "scripts" / "demo.py"), "--rows", "400", "--bad-rows", "8",
        "--job-speed", "instant", "--churn-seconds", "3", "--churn-rate", "10",
        "--max-delay", "2", "--database", database, "--namespace", namespace,
        "--var", str(tmp_path / "demo"), "--any-ports", "--exit",
    ]  # fmt: skip
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    try:
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False
        )
    finally:
        drop_database(database)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    synced = re.search(r"rows synced\s+([\d,]+)\s+\(records in zohosim's Orders: ([\d,]+)\)", out)
    assert synced, out
    assert synced.group(1) == synced.group(2)
    assert int(synced.group(1).replace(",", "")) >= 400 - 8
    rejected = re.findall(r"^    ([A-Z_]+) / (\S+): (\d+) \((\d+) held back\)$", out, re.M)
    assert sum(int(n) for *_, n, _ in rejected) == 8, out
    assert re.search(r"naive \(all upserts\)\s+40\b", out)
    flower = re.search(r"Flower (http://127\.0\.0\.1:\d+) \(user demo, password \S+\) while", out)
    assert flower, out
    assert re.search(r"ports: zohosim \d+, web \d+, Flower \d+ \(set DEMO_SIM_PORT", out), out
    closing = out[out.index("ordersync demo ====") :]
    assert "password" not in closing, "no login for a Flower the demo has stopped"
    assert "Flower     stopped with the demo" in closing
    assert (tmp_path / "demo" / "logs" / "worker.log").stat().st_size > 0
    assert "client_secret" not in (tmp_path / "demo" / "ordersync.toml").read_text()
    with pytest.raises(requests.ConnectionError):  # stopped with everything else
        requests.get(f"{flower.group(1)}/healthcheck", timeout=3)
    for db in (0, 1):  # its queues, beat lock and token cache are gone too
        client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{db}")
        try:
            assert not list(client.scan_iter(match=f"{namespace}:*", count=500))
        finally:
            client.close()


def _demo_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ports_default_when_free_else_any_and_a_given_busy_port_is_refused() -> None:
    script = _demo_script()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picked = script.choose_port("web", "DEMO_WEB_PORT", taken, {})
        assert picked != taken and script.port_is_free(picked)
        with pytest.raises(script.PortBusy) as refused:
            script.choose_port("web", "DEMO_WEB_PORT", 8080, {"DEMO_WEB_PORT": str(taken)})
        assert str(refused.value) == (
            f"port {taken} for web is busy: set DEMO_WEB_PORT to a free port, or unset it to"
            " let the demo pick one"
        )
    free = script.any_free_port()
    assert script.choose_port("web", "DEMO_WEB_PORT", free, {}) == free
    assert script.choose_port("web", "DEMO_WEB_PORT", 1, {"DEMO_WEB_PORT": str(free)}) == free
    with pytest.raises(SystemExit, match="DEMO_WEB_PORT='x80': a port number"):
        script.choose_port("web", "DEMO_WEB_PORT", 8080, {"DEMO_WEB_PORT": "x80"})


def test_demo_stops_at_once_on_a_busy_port_it_was_told_to_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
               "DEMO_FLOWER_PORT": str(taken), "DEMO_DB": "must_not_be_created"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "demo.py"), "--var", str(tmp_path / "d")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"port {taken} for Flower is busy: set DEMO_FLOWER_PORT" in done.stderr
    assert done.stdout == ""  # nothing seeded, nothing started
