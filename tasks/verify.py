"""Scheduled verification (``ordersync verify`` through beat), staged so no task waits.

``ordersync.verify.start``    on ``verify_crontab`` (off when empty): record a verification and
                              create its first Bulk Read job (``pipeline.verify.start``)
``ordersync.verify.advance``  one step of it (``pipeline.verify.advance``); sends itself again
                              with a countdown (2 s, then 30 s) while the export runs

A start refused by the credit budget is logged and dropped: the next scheduled one comes.
This module must not import ``tasks.app`` (see ``tasks/ongoing.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from pipeline import verify
from pipeline.settings import zoho_wins_fields
from pipeline.zoho.errors import CreditBudgetExceeded
from tasks.base import OrdersyncTask, worker_client, worker_db, worker_settings
from tasks.schedule import VERIFY_ADVANCE, VERIFY_START

logger = logging.getLogger(__name__)

FIRST_CHECK = 2.0  # seconds: a small export is often done by then
POLL_COUNTDOWN = 30.0  # seconds between later checks of a running read job


@shared_task(name=VERIFY_START, base=OrdersyncTask, bind=True)
def verify_start(self: OrdersyncTask) -> dict[str, Any]:
    """Start a verification with the configured repair and zoho-wins fields."""
    settings = worker_settings()
    try:
        with worker_db() as conn:
            v = verify.start(conn, settings, worker_client(), repair=settings.verify_repair,
                             zoho_wins=zoho_wins_fields(settings))  # fmt: skip
    except CreditBudgetExceeded as exc:
        logger.warning("verification not started: %s", exc.message)
        return {"started": False, "reason": exc.message}
    verify_advance.apply_async(args=(v.id,), countdown=FIRST_CHECK)
    return {"started": True, "verification_id": v.id, "credits_estimate": v.credits_estimate}


@shared_task(name=VERIFY_ADVANCE, base=OrdersyncTask, bind=True)
def verify_advance(self: OrdersyncTask, verification_id: int) -> dict[str, Any]:
    """One step of verification ``verification_id``; again in 30 s while it runs."""
    settings = worker_settings()
    with worker_db() as conn:
        v = verify.advance(conn, settings, worker_client(), verification_id)
    if v.state is verify.VerifyState.RUNNING:
        self.schedule_again(POLL_COUNTDOWN, verification_id)
    return {"verification_id": v.id, "state": v.state.value, "page": v.page,
            "counts": (v.report or {}).get("counts")}
