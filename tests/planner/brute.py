"""An exact brute force of Zoho's credit pricing, written without the planner's reasoning.

Prices come straight from the article (500 credits a Bulk Write job of up to 25,000 rows; one
credit per started ten records an Upsert call of up to 100 records). Nothing here assumes that
calls of 100 are best or that bulk jobs should be full: every split of the upsert rows into calls
of 1..100 records is scored by dynamic programming, and every feasible bulk/upsert division of
the rows is tried. A job's price does not depend on its size, so ``k`` jobs can carry any ``B``
rows with ``k <= B <= 25,000·k`` (each job 1..25,000 rows) at the same price; the brute force
tries every such ``B`` for every ``k`` up to one more job than could ever be filled.
"""

from __future__ import annotations

import functools
from operator import add

JOB_CREDITS = 500
JOB_ROWS = 25_000
CALL_RECORDS = 100
MAX_ROWS = 60_000

_CALLS = 10**6  # encodes (credits, calls) as credits * _CALLS + calls, so min() is lexicographic


@functools.cache
def _upsert_table() -> tuple[int, ...]:
    """best[r] = the lexicographically least (credits, calls) over every split of r records."""
    call = [-(-size // 10) * _CALLS + 1 for size in range(1, CALL_RECORDS + 1)]  # sizes 1..100
    best = [0]
    for r in range(1, MAX_ROWS + 1):
        sizes = min(r, CALL_RECORDS)
        # best[r - size] + call(size) for size = 1..sizes
        best.append(min(map(add, reversed(best[r - sizes : r]), call[:sizes])))
    return tuple(best)


def best_mix(
    rows: int, *, allow_bulk: bool = True, upsert_on_tie: bool = False
) -> tuple[int, int, int]:
    """(credits, calls, bulk jobs) of the best mix, ties broken like the planner's contract."""
    assert 0 <= rows <= MAX_ROWS
    table = _upsert_table()
    max_jobs = rows // JOB_ROWS + 2 if allow_bulk else 0
    options = []
    for jobs in range(max_jobs + 1):
        low, high = (jobs, min(rows, jobs * JOB_ROWS)) if jobs else (0, 0)
        if low > high:
            continue  # more jobs than rows: some job would be empty
        # every B in [low, high] bulk rows, leaving rows - B for upsert
        upsert = min(table[rows - high : rows - low + 1])
        credits = jobs * JOB_CREDITS + upsert // _CALLS
        calls = jobs + upsert % _CALLS
        options.append((credits, jobs, calls) if upsert_on_tie else (credits, calls, jobs))
    credits, second, third = min(options)
    return (credits, third, second) if upsert_on_tie else (credits, second, third)


def min_credits(rows: int, *, allow_bulk: bool = True) -> int:
    """The fewest credits that send ``rows`` rows."""
    return best_mix(rows, allow_bulk=allow_bulk)[0]
