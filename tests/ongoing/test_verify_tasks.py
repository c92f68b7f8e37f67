"""Scheduled verification through Celery: a real worker, PostgreSQL, zohosim over HTTP."""

from __future__ import annotations

from celery import Celery

from tasks.schedule import VERIFY_START
from tests.fixtures.celery import WorkerFactory
from tests.ongoing.conftest import Ongoing
from tests.ongoing.test_tasks import wait_until, worker_env
from tests.ongoing.test_verify import _sync_everything


def test_worker_runs_a_verification_with_repair_from_start_to_end(
    ongoing: Ongoing, celery_worker_factory: WorkerFactory, celery_sender: Celery
) -> None:
    _sync_everything(ongoing)
    by_parent = {str(r["parent_id"]): r for r in ongoing.sim.admin.records()}
    ongoing.sim.admin.ui_delete(by_parent["9"]["id"])
    celery_worker_factory(extra_env=worker_env(ongoing, verify_repair="true"))
    celery_sender.send_task(VERIFY_START)

    def rows() -> list[tuple[object, ...]]:
        return ongoing.query("SELECT state, report->'counts'->>'missing', requeued"
                             " FROM ordersync.verifications")

    wait_until(lambda: rows() and rows()[0][0] != "running", 30, "the verification to end")
    assert rows() == [("done", "1", 1)]
    assert ongoing.pending() == 1  # order 9, re-queued for the normal sync
    assert ongoing.sim.admin.credits()["by_api"]["bulk_read_create"] == 50
