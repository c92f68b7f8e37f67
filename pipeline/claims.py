"""Pricing a run's next claim: bulk batch or upserts, on exactly the rows it will take (pure).

The initial sync decides claim by claim (:func:`choose_claim`), and the dry run and the run's
forecast replay the same rule over the writable rows (:func:`initial_run_plan`), so what is
predicted is what the run does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import planner
from pipeline.ledger import BatchKind
from pipeline.planner import Plan, plan
from pipeline.zoho.limits import BULK_JOB_CREDITS, BULK_JOB_MAX_ROWS


@dataclass(frozen=True)
class ClaimChoice:
    """How the run's next claim goes: one bulk batch of ``rows`` rows with keys above ``after``
    (None: from the first free key), or the free rows (``rows``) by Upsert calls (``kind``
    REALTIME); ``plan`` is the planner's cheapest plan for all the sendable rows."""

    kind: BatchKind
    rows: int
    plan: planner.Plan
    after: str | None = None


def bulk_is_cheaper(rows: int) -> bool:
    """Is one Bulk Write job cheaper than Upsert calls for ``rows`` rows (5,000 and more)?"""
    return planner.plan(rows).bulk_jobs > 0


def choose_claim(
    free_rows: int, batch_size: int, *, ahead: int | None = None, after: str | None = None
) -> ClaimChoice | None:
    """Bulk batch or upserts for the next claim of a run, priced on the rows it will take.

    ``free_rows``: sendable rows (pending, free, passing the field rules); ``ahead``: those of
    them with keys above ``after``, the highest open bulk batch (a run claims forward first).
    A bulk batch goes only where it carries enough rows to be cheaper than upserting them
    (:func:`bulk_is_cheaper`: at least the break-even 5,000): the rows ahead when they are
    enough, else the first free rows in key order (rows freed behind the open batches
    included). Otherwise every free row goes by upsert: the retry rounds and a tail below the
    break-even. Deciding claim by claim on what is left reaches the planner's mix: 26,000 rows
    → one bulk job, then 1,000 rows by ten upsert calls. None: nothing to send.
    """
    if free_rows <= 0:
        return None
    the_plan = planner.plan(free_rows)
    cap = min(batch_size, BULK_JOB_MAX_ROWS)
    if ahead and after is not None and bulk_is_cheaper(min(ahead, cap)):
        return ClaimChoice(BatchKind.BULK, min(ahead, cap), the_plan, after)
    if bulk_is_cheaper(min(free_rows, cap)):
        return ClaimChoice(BatchKind.BULK, min(free_rows, cap), the_plan, None)
    return ClaimChoice(BatchKind.REALTIME, free_rows, the_plan)


def initial_run_plan(rows: int, batch_size: int) -> Plan:
    """What an initial run would send for ``rows`` writable rows, priced as the run prices them.

    Claim by claim, like the run's extract step (:func:`choose_claim`): a bulk batch of up to
    ``batch_size`` rows only while one bulk job of that size is cheaper than upserts, then
    every row left by Upsert calls of 100. Rows Zoho refuses for their data cost nothing more
    (held back at once); only rows it skips for the moment, or rows edited in flight, are sent
    again, and nobody knows those before the run.
    """
    bulk_rows: list[int] = []
    left = rows
    while (choice := choose_claim(left, batch_size)) is not None and choice.kind is BatchKind.BULK:
        bulk_rows.append(choice.rows)
        left -= choice.rows
    upserts = plan(left, allow_bulk=False)
    return Plan(
        rows=rows,
        bulk_jobs=len(bulk_rows),
        bulk_rows=tuple(bulk_rows),
        upsert_calls=upserts.upsert_calls,
        upsert_rows=upserts.upsert_rows,
        credits=len(bulk_rows) * BULK_JOB_CREDITS + upserts.credits,
    )
