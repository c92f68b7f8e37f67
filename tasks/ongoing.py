"""The ongoing sync's tasks and beat entries: near-real-time checks and interval runs.

``ordersync.realtime.check``  every ``realtime_check`` seconds: flush what is due
                              (``pipeline.realtime.flush``)
``ordersync.deletes.run``     every ``deletes_every`` seconds when ``sync.deletes`` is on: delete
                              the Zoho records of deleted legacy rows (``pipeline.deletes.run``)
``ordersync.interval.run``    on ``interval_crontab``: plan and send all pending rows
                              (``pipeline.interval.run_interval``); the bulk batches it claims
                              go on to the initial-sync chain (``ordersync.render`` …)

:func:`beat_schedule` gives the entries of the configured mode (``realtime``, ``interval`` or
``both``); ``tasks.config.create_app`` puts them in the app's ``beat_schedule``. Both tasks are
safe to run twice at once (rows are claimed in PostgreSQL), so a late or repeated message
costs nothing but a query; ``expires`` drops a check that waited longer than its period.

This module must not import ``tasks.app`` (``create_app`` imports it): the tasks are
``shared_task``s, bound to the app that includes this module.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import shared_task

from pipeline import deletes, interval, realtime
from pipeline.initial_sync import Step
from pipeline.realtime import Reason
from pipeline.settings import Settings
from tasks.base import OrdersyncTask, worker_client, worker_db, worker_settings
from tasks.schedule import DELETES_RUN, INTERVAL_RUN, REALTIME_CHECK
from tasks.steps import send_step

logger = logging.getLogger(__name__)

# While an interval run asked for by a near-real-time check (a backlog cheaper by bulk) is on
# its way, checks do not ask again.
BACKLOG_REQUEST_TTL = 600


@shared_task(name=REALTIME_CHECK, base=OrdersyncTask, bind=True)
def realtime_check(self: OrdersyncTask, *, woken: bool = False) -> dict[str, Any]:
    """Flush the near-real-time buffer if due (``woken`` by ``ordersync listen``: every ready
    row); ask for an interval run on a bulk-sized backlog."""
    settings = worker_settings()
    with worker_db() as conn:
        result = realtime.flush(settings, worker_client(), conn=conn, woken=woken)
    if result.decision.reason is Reason.BACKLOG and _first_backlog_request(settings):
        logger.info("%d rows ready: cheaper by bulk, interval run requested",
                    result.decision.ready)  # fmt: skip
        interval_run.apply_async()
    if result.more:
        self.schedule_again(0, woken=woken)
    return result.as_dict()


def _backlog_key(settings: Settings) -> str:
    return f"{settings.zoho.redis_prefix}:interval:requested"


def _first_backlog_request(settings: Settings) -> bool:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return bool(client.set(_backlog_key(settings), "1", nx=True, ex=BACKLOG_REQUEST_TTL))
    finally:
        client.close()


def _backlog_handled(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.delete(_backlog_key(settings))
    finally:
        client.close()


@shared_task(name=INTERVAL_RUN, base=OrdersyncTask, bind=True)
def interval_run(self: OrdersyncTask) -> dict[str, Any]:
    """Plan and send every pending row: upserts here, bulk batches on to the initial-sync chain."""
    settings = worker_settings()
    result = interval.run_interval(settings, worker_client())
    for batch_id in result.bulk_batches:
        send_step(self.app, Step.RENDER, batch_id=batch_id, run_id=result.run_id)
    _backlog_handled(settings)  # its rows are claimed: a later backlog may ask again
    return result.as_dict()


@shared_task(name=DELETES_RUN, base=OrdersyncTask, bind=True)
def deletes_run(self: OrdersyncTask) -> dict[str, Any]:
    """Delete the Zoho records of deleted legacy rows (opt-in; capped by ``max_deletes``)."""
    settings = worker_settings()
    if not settings.deletes:
        return {"skipped": "sync.deletes is off"}
    with worker_db() as conn:
        report = deletes.run(conn, settings, worker_client())
    return report.as_dict()
