"""The credit-optimal choice between Bulk Write jobs and Upsert calls.

DESIGN.md, "Choosing the API by cost".

Zoho charges a Bulk Write job a flat ``BULK_JOB_CREDITS`` (500) for up to ``BULK_JOB_MAX_ROWS``
(25,000) rows, and an Upsert call one credit per started ten records for up to
``UPSERT_MAX_RECORDS`` (100) records. The article's rule of thumb ("bulk above 5,000 records")
is right for one batch but wrong for a mix: 26,000 rows cost 1,000 credits as two bulk jobs and
600 as one bulk job plus ten upsert calls. :func:`plan` finds the cheapest mix for any number of
rows, keeps to the mode's deadline (bulk jobs are asynchronous, so the near-real-time mode may
forbid them) and to a credit budget (what cannot be paid now waits, with a reason that
``ordersync status`` shows).

Why the search is this small:

* Upsert cost of ``r`` rows. Calls of sizes ``s_1 + … + s_m = r`` (each ``s_i <= 100``) cost
  ``Σ⌈s_i/10⌉ >= ⌈r/10⌉`` (the ceiling is subadditive), and need ``m >= ⌈r/100⌉`` calls. Calls of
  100 with the remainder in the last one reach both bounds at once, because 100 is a multiple of
  10: ``10·⌊r/100⌋ + ⌈(r mod 100)/10⌉ = ⌈r/10⌉``. So no other split is ever better, in credits or
  in calls.
* Bulk rows. A job's price does not depend on how many rows it carries, and upsert cost grows
  with the rows left over, so ``k`` jobs should carry ``min(N, 25,000·k)`` rows; how those rows
  are spread over the jobs changes nothing (we fill jobs in order, like the article's 25k
  batches). More than ``⌈N/25,000⌉`` jobs only adds 500 credits each.

That leaves one candidate per ``k`` in ``0..⌈N/25,000⌉``; :func:`plan` scores them all.
Ties on credits go to the plan with fewer API calls (fewer round trips against Zoho's
concurrency limits), then to the one with fewer bulk jobs (upsert results are synchronous). With
``prefer_upsert_on_tie=True`` the order of those two is swapped, so 5,000 rows stay on upsert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.zoho.limits import (
    BULK_JOB_CREDITS,
    BULK_JOB_MAX_ROWS,
    UPSERT_MAX_RECORDS,
    upsert_credits,
)

# The article's rule of thumb, kept only as a naive baseline to compare against.
ARTICLE_BULK_THRESHOLD = 5_000


@dataclass(frozen=True)
class Plan:
    """How to send ``rows`` rows to Zoho and what it costs.

    ``bulk_rows`` holds the row count of each Bulk Write job, in order; the remaining
    ``upsert_rows`` go by ``upsert_calls`` Upsert calls of up to 100 records (sizes in
    :attr:`upsert_sizes`). ``waiting_rows`` are rows of the request this plan does not cover
    (the credit budget could not pay for them); ``waiting_reason`` says why, for ``ordersync
    status``, and is empty when nothing waits.
    """

    rows: int
    bulk_jobs: int
    bulk_rows: tuple[int, ...]
    upsert_calls: int
    upsert_rows: int
    credits: int
    waiting_rows: int = 0
    waiting_reason: str = ""

    @property
    def calls(self) -> int:
        """API calls that write rows (bulk job creations plus upsert calls)."""
        return self.bulk_jobs + self.upsert_calls

    @property
    def upsert_sizes(self) -> tuple[int, ...]:
        """Records per upsert call: full calls of 100, the remainder last."""
        full, rest = divmod(self.upsert_rows, UPSERT_MAX_RECORDS)
        return (UPSERT_MAX_RECORDS,) * full + ((rest,) if rest else ())

    @property
    def requested_rows(self) -> int:
        """Rows that were pending when the plan was made (planned plus waiting)."""
        return self.rows + self.waiting_rows

    def alternatives(self) -> tuple[tuple[str, Plan], ...]:
        """The naive strategies for the same pending rows, for comparison."""
        return naive_plans(self.requested_rows)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form; the first four keys are the stable ones scripts rely on."""
        return {
            "rows": self.rows,
            "bulk_jobs": self.bulk_jobs,
            "upsert_calls": self.upsert_calls,
            "credits": self.credits,
            "bulk_rows": list(self.bulk_rows),
            "upsert_rows": self.upsert_rows,
            "waiting_rows": self.waiting_rows,
            "waiting_reason": self.waiting_reason,
        }

    def describe(self) -> str:
        """One line for humans, e.g. ``1 bulk job (25000 rows) + 10 upsert calls (1000 rows)``."""
        parts = []
        if self.bulk_jobs:
            noun = "job" if self.bulk_jobs == 1 else "jobs"
            parts.append(f"{self.bulk_jobs} bulk {noun} ({sum(self.bulk_rows)} rows)")
        if self.upsert_calls:
            noun = "call" if self.upsert_calls == 1 else "calls"
            parts.append(f"{self.upsert_calls} upsert {noun} ({self.upsert_rows} rows)")
        return " + ".join(parts) or "nothing to send"


def _upsert_cost(rows: int) -> tuple[int, int]:
    """(calls, credits) of ``rows`` records sent in calls of 100, the remainder last."""
    full, rest = divmod(rows, UPSERT_MAX_RECORDS)
    credits = full * upsert_credits(UPSERT_MAX_RECORDS) + (upsert_credits(rest) if rest else 0)
    return full + (1 if rest else 0), credits


def _mix(rows: int, bulk_jobs: int) -> Plan:
    """``rows`` rows with ``bulk_jobs`` jobs filled in order and upserts of 100 for the rest."""
    bulk_total = min(rows, bulk_jobs * BULK_JOB_MAX_ROWS)
    bulk_rows = tuple(
        min(BULK_JOB_MAX_ROWS, bulk_total - i * BULK_JOB_MAX_ROWS) for i in range(bulk_jobs)
    )
    if bulk_rows and bulk_rows[-1] <= 0:
        raise ValueError(f"{bulk_jobs} bulk jobs for {rows} rows would leave a job empty")
    upsert_calls, upsert_cost = _upsert_cost(rows - bulk_total)
    return Plan(
        rows=rows,
        bulk_jobs=bulk_jobs,
        bulk_rows=bulk_rows,
        upsert_calls=upsert_calls,
        upsert_rows=rows - bulk_total,
        credits=bulk_jobs * BULK_JOB_CREDITS + upsert_cost,
    )


def _cheapest(rows: int, *, allow_bulk: bool, prefer_upsert_on_tie: bool) -> Plan:
    """The best full plan for ``rows`` rows, scoring every sensible number of bulk jobs."""

    def score(jobs: int) -> tuple[int, int, int]:
        calls, credits = _upsert_cost(max(0, rows - jobs * BULK_JOB_MAX_ROWS))
        credits += jobs * BULK_JOB_CREDITS
        calls += jobs
        return (credits, jobs, calls) if prefer_upsert_on_tie else (credits, calls, jobs)

    max_jobs = math.ceil(rows / BULK_JOB_MAX_ROWS) if allow_bulk else 0
    # Scored without building each candidate: a plan lists its jobs, and there are N/25,000.
    return _mix(rows, min(range(max_jobs + 1), key=score))


def min_credits(rows: int, *, allow_bulk: bool = True) -> int:
    """The fewest credits that can send ``rows`` rows (0 for none)."""
    return _cheapest(rows, allow_bulk=allow_bulk, prefer_upsert_on_tie=False).credits


def plan(
    rows: int,
    *,
    allow_bulk: bool = True,
    credits_available: int | None = None,
    prefer_upsert_on_tie: bool = False,
) -> Plan:
    """The cheapest way to send ``rows`` pending rows, within the mode's deadline and the budget.

    ``allow_bulk=False`` is for modes whose deadline is shorter than an asynchronous bulk job
    (near-real-time): everything goes by upsert. ``credits_available`` is what the daily budget
    has left; when it cannot pay for all rows, the plan covers the largest number of rows it
    can pay for (possibly none), the rest are ``waiting_rows`` and ``waiting_reason`` says so.
    Those rows stay pending in the database, so waiting loses nothing.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, not {rows}")
    if credits_available is not None and credits_available < 0:
        raise ValueError(f"credits_available must be >= 0, not {credits_available}")
    best = _cheapest(rows, allow_bulk=allow_bulk, prefer_upsert_on_tie=prefer_upsert_on_tie)
    if credits_available is None or best.credits <= credits_available:
        return best

    # The cheapest cost never falls as rows grow (dropping a row from a plan never makes it
    # dearer), so the largest affordable prefix is found by bisection.
    low, high = 0, rows  # min_credits(low) <= budget < min_credits(high)
    while high - low > 1:
        middle = (low + high) // 2
        if min_credits(middle, allow_bulk=allow_bulk) <= credits_available:
            low = middle
        else:
            high = middle
    partial = _cheapest(low, allow_bulk=allow_bulk, prefer_upsert_on_tie=prefer_upsert_on_tie)
    waiting = rows - low
    reason = (
        f"credit budget: {credits_available} of {best.credits} credits needed are available; "
        f"{waiting} of {rows} rows wait"
    )
    return Plan(
        rows=partial.rows,
        bulk_jobs=partial.bulk_jobs,
        bulk_rows=partial.bulk_rows,
        upsert_calls=partial.upsert_calls,
        upsert_rows=partial.upsert_rows,
        credits=partial.credits,
        waiting_rows=waiting,
        waiting_reason=reason,
    )


def all_upsert(rows: int) -> Plan:
    """Naive baseline: every row by Upsert calls of 100."""
    return _mix(rows, 0)


def all_bulk(rows: int) -> Plan:
    """Naive baseline: every row by Bulk Write jobs of up to 25,000 (none for zero rows)."""
    return _mix(rows, math.ceil(rows / BULK_JOB_MAX_ROWS))


def bulk_above_threshold(rows: int, threshold: int = ARTICLE_BULK_THRESHOLD) -> Plan:
    """Naive baseline, the article's rule: all bulk when there are more than ``threshold`` rows."""
    return all_bulk(rows) if rows > threshold else all_upsert(rows)


def naive_plans(rows: int) -> tuple[tuple[str, Plan], ...]:
    """The naive strategies an operator might pick by hand, named, for ``ordersync plan``."""
    return (
        ("all upsert", all_upsert(rows)),
        (f"bulk above {ARTICLE_BULK_THRESHOLD:,}", bulk_above_threshold(rows)),
        ("all bulk", all_bulk(rows)),
    )
