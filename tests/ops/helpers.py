"""Shared pieces of the operations tests: the environment of worker processes that sync a test
database into a zohosim, and a headless Chromium run."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline import demo
from pipeline.initial_sync import run_progress
from pipeline.legacy.connection import connect
from pipeline.settings import Settings
from zohosim.testing import SimProcess

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"  # gitignored: screenshots and pages the tests keep
REDIS_URL = "redis://127.0.0.1:6379/1"
CHROMIUM = shutil.which("chromium")


def sync_env(
    settings: Settings, sim: SimProcess, prefix: str, *, batch_size: int = 100, **more: str
) -> dict[str, str]:
    """``ORDERSYNC_*`` variables for a worker that syncs ``settings``' database into ``sim``."""
    env = {
        "ORDERSYNC_SOURCE_DSN": settings.source.dsn.reveal(),
        "ORDERSYNC_ZOHO_ACCOUNTS_URL": sim.base_url,
        "ORDERSYNC_ZOHO_API_URL": sim.base_url,
        "ORDERSYNC_ZOHO_UPLOAD_URL": sim.base_url,
        "ORDERSYNC_ZOHO_CLIENT_ID": sim.client_id,
        "ORDERSYNC_ZOHO_CLIENT_SECRET": sim.client_secret,
        "ORDERSYNC_ZOHO_REFRESH_TOKEN": sim.refresh_token,
        "ORDERSYNC_ZOHO_REDIS_PREFIX": prefix,
        "ORDERSYNC_ZOHO_CONNECT_TIMEOUT": "2",
        "ORDERSYNC_ZOHO_READ_TIMEOUT": "15",
        "ORDERSYNC_ZOHO_RETRY_BACKOFF": "0.05",
        "ORDERSYNC_ZOHO_RETRY_BACKOFF_MAX": "0.2",
        "ORDERSYNC_SYNC_REDIS_URL": REDIS_URL,
        "ORDERSYNC_SYNC_BATCH_SIZE": str(batch_size),
        "ORDERSYNC_SYNC_WORK_DIR": str(settings.work_dir),
    }
    env.update(more)
    return env


# An initial sync prices each claim (pipeline.claims.choose_claim): a bulk job only for a
# batch of about 5,000 rows or more. 5,000 more rows on the template's 200 (8 of them bad) with
# batches of 5,000: one bulk job of 5,000 rows, then an upsert round for the other 200 and the
# rows Zoho refused.
BULK_BATCH = 5_000
MORE_ROWS = 5_000


def add_rows(settings: Settings, rows: int = MORE_ROWS, *, seed: int = 7) -> int:
    """Append ``rows`` pending demo orders to the test database; the table's row count after."""
    conn = connect(settings)
    try:
        demo.seed(conn, settings, rows, seed=seed)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            return int(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something true; that value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_run_done(settings: Settings, run_id: int, timeout: float = 120) -> dict[str, Any]:
    """The run's progress once it is no longer running."""

    def finished() -> dict[str, Any] | None:
        progress = run_progress(settings, run_id)
        return progress if progress["state"] != "running" else None

    return dict(wait_until(finished, timeout, f"run {run_id} to finish"))


def chromium(
    url: str,
    profile: Path,
    *,
    screenshot: Path | None = None,
    size: str = "1400,1000",
    must_load: bool = True,
) -> str:
    """Open ``url`` in headless Chromium, let its scripts run, and return the page's DOM.

    A page that does not load (e.g. a 401 without a login) gives an empty DOM; with
    ``must_load`` that fails the test.
    """
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--window-size={size}", "--virtual-time-budget=8000", "--dump-dom",
    ]  # fmt: skip
    if screenshot is not None:
        argv.append(f"--screenshot={screenshot}")
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=120, cwd=profile.parent, check=False
    )
    if must_load:
        assert done.returncode == 0 and done.stdout, done.stderr[-3000:]
    return done.stdout


def redis_cleanup(prefix: str, url: str = REDIS_URL) -> None:
    """Delete the keys under ``prefix:`` (the test's token cache and governor)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def merged(*parts: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out


@contextlib.contextmanager
def running_flower(
    env: Mapping[str, str], log: Path, *, extra: tuple[str, ...] = (), timeout: float = 60
) -> Iterator[tuple[str, str, str]]:
    """Flower as deploy/ runs it (basic auth from ``FLOWER_BASIC_AUTH``) in the environment
    ``env`` (a test's broker namespace), on a free port: (base URL, user, password). ``extra``:
    more Flower options, e.g. ``("--logging=debug",)``."""
    import requests

    from tests.deploy.deployfiles import Process, free_port

    user, password = "operator", secrets.token_urlsafe(12)
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "tasks.app", "flower",
            "--address=127.0.0.1", f"--port={port}", *extra]  # fmt: skip
    process = Process(argv, {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}, log)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.alive(), process.log()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{base}/healthcheck", timeout=5).status_code == 200
            return False

        wait_until(up, timeout, "Flower to answer")
        yield base, user, password
    finally:
        process.stop()
