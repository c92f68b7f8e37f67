"""``make demo``'s script end to end, small: a private database, namespace, directory and ports."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

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
    flower = re.search(r"Flower\s+(http://127\.0\.0\.1:\d+)\s+user demo\s+password (\S+)", out)
    assert flower, out
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
