"""Interval mode: every 12 or 24 hours, send all pending rows by the plan that costs least.

One run (:func:`run_interval`, the beat task ``ordersync.interval.run``):

1. hold back the pending rows that break a field rule (never sent: ``ordersync errors``), then
   count the rows an interval run may take: pending, not claimed by an unfinished batch, not
   held back at their version (rows resting after a refusal are included: they are retried);
2. ask the planner for the cheapest mix of Bulk Write jobs and Upsert calls within the credits
   the budget has left (``CreditLedger.remaining()``): 26,000 rows → one bulk job and ten
   upserts, 600 credits;
3. send the upsert part at once (batches of 100, claimed, reconciled like near-real-time
   batches), then claim the bulk part as batches of the run with the initial-sync chain's own
   step (``pipeline.initial_sync.extract``); the caller (the task) sends each claimed batch on
   to that chain's ``render`` step, and the chain uploads, polls and reconciles it;
4. what the budget cannot pay waits: the rows stay pending and the run's
   ``stats["waiting"]`` (:data:`pipeline.realtime.WAITING_KEY`) says why, for ``ordersync
   status`` (:func:`pipeline.realtime.waiting`).

Upserts go first: they claim the lowest free keys, and the bulk batches then claim the rest, so
the split the planner chose holds even while the application keeps writing.

The run ends ``done`` once its bulk batches are claimed: the chain's next claim for the run
(sent when a batch is reconciled) then finds the run finished and claims nothing, so rows
changed since the plan never make a 500-credit bulk job of their own; they wait for the next
check or run. Only a plan with more bulk jobs than ``batches_in_flight`` leaves the run
``running``, for the chain to claim the rest of that backlog as batches finish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import connection as Connection

from pipeline import initial_sync, ledger, mapping_check, planner
from pipeline.ledger import RunKind, RunState
from pipeline.legacy.connection import connect
from pipeline.legacy.extract import hold_invalid_pending
from pipeline.planner import Plan
from pipeline.realtime import WAITING_KEY, pending_state, set_run_stats, waiting_stats
from pipeline.settings import Settings, Severity
from pipeline.upserts import BatchResult, release_abandoned, send_batch
from pipeline.zoho import fields
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import CreditBudgetExceeded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntervalResult:
    """What an interval run did: the plan, the upsert batches sent, the bulk batches claimed.

    ``bulk_batches`` are claimed (``extracted``) bulk batches of the run: send each to the
    initial-sync chain's ``render`` step. ``run_open``: the run stays ``running`` for the chain.
    """

    run_id: int | None
    pending: int
    plan: Plan
    upserts: tuple[BatchResult, ...]
    bulk_batches: tuple[int, ...]
    waiting_reason: str = ""
    run_open: bool = False
    check_credits: int = 0  # the field metadata read before planning (1 once its cache aged)

    @property
    def credits_planned(self) -> int:
        """What the run said it would spend: its plan plus the check before it."""
        return self.plan.credits + self.check_credits

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what the Celery task returns)."""
        return {
            "run_id": self.run_id,
            "pending": self.pending,
            "plan": self.plan.as_dict(),
            "check_credits": self.check_credits,
            "credits_planned": self.credits_planned,
            "upsert_sizes": [b.sent for b in self.upserts],
            "upsert_credits": sum(b.credits for b in self.upserts),
            "bulk_batches": list(self.bulk_batches),
            "waiting_reason": self.waiting_reason,
            "run_open": self.run_open,
        }


def run_interval(
    settings: Settings,
    client: ZohoClient,
    *,
    allow_bulk: bool = True,
    conn: Connection | None = None,
) -> IntervalResult:
    """One interval run (see the module docstring). ``allow_bulk=False`` plans upserts only.

    Records an ``interval`` run (with ``stats["plan"]``) only when rows are pending.
    """
    own = conn is None
    conn = connect(settings, application="ordersync-interval") if conn is None else conn
    try:
        release_abandoned(conn, settings)
        hold_invalid_pending(conn, settings)  # priced on the rows Zoho can take
        state = pending_state(conn, settings)
        if state.initial_running:  # its rounds send every pending row; a plan here would race it
            log.info("interval run skipped: an initial sync is running")
            return IntervalResult(None, state.free, planner.plan(0), (), (), "initial sync running")
        pending = state.free
        if pending == 0:
            return IntervalResult(None, 0, planner.plan(0), (), ())
        check_credits = fields.read_cost(client)  # said before the check runs
        disagreements = [
            p for p in mapping_check.against_zoho(settings, conn, client=client)
            if p.severity is Severity.ERROR
        ]  # fmt: skip
        conn.rollback()  # the check's reads end here
        if disagreements:
            reason = "the mapping disagrees with the Zoho module: " + "; ".join(
                map(str, disagreements)
            )
            log.error("interval run not started: %s", reason)
            return IntervalResult(None, pending, planner.plan(0), (), (), reason,
                                  check_credits=check_credits)  # fmt: skip
        budget = client.credits.remaining()
        the_plan = planner.plan(pending, allow_bulk=allow_bulk, credits_available=budget)
        with conn:
            run_id = ledger.create_run(conn, settings, RunKind.INTERVAL)
            stats: dict[str, Any] = {"pending": pending, "plan": the_plan.as_dict(),
                                     "check_credits": check_credits}  # fmt: skip
            if the_plan.waiting_rows:
                stats[WAITING_KEY] = waiting_stats(the_plan.waiting_rows, the_plan.waiting_reason)
            set_run_stats(conn, settings, run_id, stats)
        log.info("interval run %s: %d pending; plan %s, %d credits",
                 run_id, pending, the_plan.describe(), the_plan.credits)  # fmt: skip

        upserts: list[BatchResult] = []
        waiting = the_plan.waiting_reason
        refused = False  # the budget refused a call the plan counted on
        try:
            for size in the_plan.upsert_sizes:
                try:
                    result = send_batch(conn, settings, client, limit=size, run_id=run_id)
                except CreditBudgetExceeded as exc:
                    refused, waiting = True, f"credit budget: {exc.message}"
                    left = the_plan.upsert_rows - sum(b.sent for b in upserts)
                    with conn:
                        set_run_stats(
                            conn, settings, run_id,
                            {WAITING_KEY: waiting_stats(left + the_plan.waiting_rows, waiting,
                                                        exc.retry_after)},
                        )  # fmt: skip
                    break
                if result is None:
                    break
                upserts.append(result)
            bulk_batches: list[int] = []
            if the_plan.bulk_jobs and not refused:
                bulk_batches = _claim_bulk(conn, settings, run_id, the_plan.bulk_jobs)
        except Exception as exc:
            with conn:
                ledger.finish_run(conn, settings, run_id, RunState.FAILED, str(exc))
            raise
        with conn:
            set_run_stats(
                conn,
                settings,
                run_id,
                {
                    "upsert_sizes": [b.sent for b in upserts],
                    "upsert_credits": sum(b.credits for b in upserts),
                    "refused": sum(b.refused for b in upserts),
                    "bulk_batches": bulk_batches,
                },
            )
            run_open = len(bulk_batches) < the_plan.bulk_jobs and bool(bulk_batches)
            if not run_open:
                ledger.finish_run(conn, settings, run_id, RunState.DONE)
        return IntervalResult(
            run_id, pending, the_plan, tuple(upserts), tuple(bulk_batches), waiting, run_open,
            check_credits,
        )
    finally:
        if own:
            conn.close()


def _claim_bulk(conn: Connection, settings: Settings, run_id: int, jobs: int) -> list[int]:
    """Claim up to ``jobs`` bulk batches for the run (the chain's window permitting)."""
    claimed: list[int] = []
    for _ in range(jobs):
        outcome = initial_sync.extract(conn, settings, run_id)
        if outcome.batch_id is None:
            break
        claimed.append(outcome.batch_id)
    return claimed
