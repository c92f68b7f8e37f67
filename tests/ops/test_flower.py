"""Flower during a real sync, seen in headless Chromium (Debian's ``chromium`` package).

Flower runs as deploy/ runs it (basic auth from ``FLOWER_BASIC_AUTH``) in the test's broker
namespace; a worker with events on runs a real initial sync of the test database into zohosim
(slowed down so the run lasts). While the run goes on, Chromium logs in (credentials in the
URL: the browser answers Flower's basic-auth challenge with them, for the page and for the
page's own data requests) and the tasks page lists our task names; the screenshot is kept as
``artifacts/flower-tasks.png``. Flower's JSON API (which does not challenge a browser) is read
with the login. Without credentials, or with a wrong password, Flower answers 401 and Chromium
shows no task.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery import Celery

from pipeline.initial_sync import run_progress, start_initial_run
from pipeline.settings import Settings
from tasks.initial import START
from tasks.steps import TASK_NAMES
from tests.fixtures.celery import CeleryTestEnv, WorkerFactory
from tests.fixtures.tools import requires_tool
from tests.ops.helpers import (
    ARTIFACTS,
    BULK_BATCH,
    add_rows,
    chromium,
    redis_cleanup,
    running_flower,
    sync_env,
    wait_run_done,
    wait_until,
)
from zohosim.testing import SimProcess

pytestmark = requires_tool("chromium", "Debian: apt-get install chromium")
TIMEOUT = 5  # seconds, per request
OUR_TASK = re.compile(r"\bordersync\.[a-z_.]+\b")


@pytest.fixture
def flower(celery_env: CeleryTestEnv, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Flower with basic auth on a free port: (base URL, user, password)."""
    with running_flower(celery_env.env(), tmp_path / "flower.log") as found:
        yield found


@pytest.mark.timeout(240)
def test_flower_in_chromium_shows_our_tasks_and_wants_a_login(
    legacy_db: Settings,
    zohosim: SimProcess,
    celery_sender: Celery,
    celery_worker_factory: WorkerFactory,
    flower: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    base, user, password = flower
    prefix = f"test:ops:{uuid.uuid4().hex}"
    chain = {START, *TASK_NAMES.values()}
    host = base.removeprefix("http://")
    # a bulk job of 5,000 rows then an upsert round (choose_claim prices each claim); the
    # 5,000-row job takes 20 s, polled until ~32 s after its creation: a run to watch
    add_rows(legacy_db)
    zohosim.admin.configure(job_rows_per_second=250)

    def seen() -> set[str]:
        """Task names Flower has events for (its JSON API, read with the login)."""
        answer = requests.get(f"{base}/api/tasks", auth=(user, password), timeout=TIMEOUT)
        assert answer.status_code == 200
        return {task["name"] for task in answer.json().values()}

    try:
        worker = celery_worker_factory(
            extra_env=sync_env(legacy_db, zohosim, prefix, batch_size=BULK_BATCH)
        )
        run_id = start_initial_run(legacy_db)
        celery_sender.send_task(START, kwargs={"run_id": run_id})
        wait_until(lambda: "ordersync.poll" in seen(), 60, "Flower to see a job polled")

        # During the run, Chromium logs in and sees our tasks in the page.
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "flower-tasks.png"
        shot.unlink(missing_ok=True)
        started = time.monotonic()
        page = chromium(
            f"http://{user}:{password}@{host}/tasks", tmp_path / "profile", screenshot=shot
        )
        seconds = time.monotonic() - started
        assert run_progress(legacy_db, run_id)["state"] == "running", "the run ended too soon"
        progress = wait_run_done(legacy_db, run_id)
    finally:
        redis_cleanup(prefix)
    (ARTIFACTS / "flower-tasks.html").write_text(page, encoding="utf-8")
    assert "<title>Tasks" in page, page[:2000]
    assert "No tasks have been received" not in page
    shown = set(OUR_TASK.findall(page))
    assert len(shown & chain) >= 3, f"task names in the page: {sorted(shown)}"
    assert worker.hostname in page
    assert shot.stat().st_size > 10_000  # a real picture, kept as the test's artefact
    print(f"Chromium: {seconds:.1f} s, names shown {sorted(shown)}")

    # After the run Flower has seen every step of the chain, the run's upsert round included.
    assert progress["state"] == "done", progress
    assert "ordersync.upsert" in chain
    wait_until(lambda: chain <= seen(), 30, f"Flower to see {sorted(chain)}")

    # No login, no page: 401 to a plain client and nothing in Chromium.
    for path in ("/", "/tasks", "/workers", "/api/tasks", f"/task/{uuid.uuid4()}"):
        assert requests.get(base + path, timeout=TIMEOUT).status_code == 401, path
    wrong = requests.get(f"{base}/tasks", auth=(user, password + "x"), timeout=TIMEOUT)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    anonymous = chromium(f"{base}/tasks", tmp_path / "anonymous", must_load=False)
    assert "<title>Tasks" not in anonymous
    assert not OUR_TASK.search(anonymous)
    guessed = chromium(f"http://{user}:wrong@{host}/tasks", tmp_path / "guessed", must_load=False)
    assert "<title>Tasks" not in guessed
    assert not OUR_TASK.search(guessed)
