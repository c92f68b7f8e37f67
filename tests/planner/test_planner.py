"""The planner against the article's table, the naive rules and an exact brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import planner
from pipeline.planner import Plan, plan
from pipeline.zoho.limits import (
    BULK_JOB_CREDITS,
    BULK_JOB_MAX_ROWS,
    UPSERT_MAX_RECORDS,
    upsert_credits,
)
from tests.planner import brute

ROWS = st.integers(min_value=0, max_value=brute.MAX_ROWS)
# Near the places where the answer changes: job boundaries and the 5,000-row break-even.
EDGES = st.builds(
    lambda jobs, offset: max(0, min(brute.MAX_ROWS, jobs * 25_000 + offset)),
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=-20, max_value=5_020),
)
SETTINGS = settings(max_examples=300, deadline=None)


def assert_consistent(p: Plan) -> None:
    """A plan's parts add up and each respects Zoho's per-call limits and prices."""
    assert sum(p.bulk_rows) + p.upsert_rows == p.rows
    assert len(p.bulk_rows) == p.bulk_jobs
    assert all(1 <= n <= BULK_JOB_MAX_ROWS for n in p.bulk_rows)
    assert len(p.upsert_sizes) == p.upsert_calls
    assert sum(p.upsert_sizes) == p.upsert_rows
    assert all(1 <= n <= UPSERT_MAX_RECORDS for n in p.upsert_sizes)
    assert p.credits == p.bulk_jobs * BULK_JOB_CREDITS + sum(map(upsert_credits, p.upsert_sizes))


def test_brute_force_uses_the_same_prices_as_the_limits_module() -> None:
    assert (brute.JOB_CREDITS, brute.JOB_ROWS, brute.CALL_RECORDS) == (
        BULK_JOB_CREDITS,
        BULK_JOB_MAX_ROWS,
        UPSERT_MAX_RECORDS,
    )


# --- the article's table -------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "calls", "credits"), [(100, 1, 10), (2_000, 20, 200)])
def test_small_volumes_go_by_upsert(rows: int, calls: int, credits: int) -> None:
    p = plan(rows)
    assert (p.bulk_jobs, p.upsert_calls, p.upsert_rows, p.credits) == (0, calls, rows, credits)
    assert planner.all_bulk(rows).credits == 500


def test_5000_rows_cost_500_either_way() -> None:
    assert planner.all_upsert(5_000).credits == 500
    assert planner.all_upsert(5_000).upsert_calls == 50
    assert planner.all_bulk(5_000).credits == 500
    assert plan(5_000).credits == 500
    # On a tie the fewer calls win (one job, not 50 upserts) unless upsert is preferred.
    assert (plan(5_000).bulk_jobs, plan(5_000).upsert_calls) == (1, 0)
    tied = plan(5_000, prefer_upsert_on_tie=True)
    assert (tied.bulk_jobs, tied.upsert_calls, tied.credits) == (0, 50, 500)


def test_25000_rows_are_one_bulk_job() -> None:
    p = plan(25_000)
    assert (p.bulk_jobs, p.bulk_rows, p.upsert_calls, p.credits) == (1, (25_000,), 0, 500)
    assert planner.all_upsert(25_000).credits == 2_500


def test_26000_rows_beat_the_bulk_above_5000_rule() -> None:
    p = plan(26_000)
    assert (p.bulk_jobs, p.bulk_rows, p.upsert_calls, p.upsert_rows) == (1, (25_000,), 10, 1_000)
    assert p.credits == 600
    naive = dict(p.alternatives())
    assert naive["bulk above 5,000"].credits == 1_000
    assert naive["all bulk"].credits == 1_000
    assert naive["all upsert"].credits == 2_600


def test_nothing_to_send_costs_nothing() -> None:
    p = plan(0)
    assert (p.rows, p.bulk_jobs, p.upsert_calls, p.credits, p.waiting_reason) == (0, 0, 0, 0, "")


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        plan(-1)
    with pytest.raises(ValueError, match="credits_available"):
        plan(10, credits_available=-1)


# --- against the brute force ----------------------------------------------------------------


@SETTINGS
@given(st.one_of(ROWS, EDGES))
def test_plan_is_optimal(rows: int) -> None:
    p = plan(rows)
    assert_consistent(p)
    assert p.rows == rows and p.waiting_rows == 0
    assert (p.credits, p.calls, p.bulk_jobs) == brute.best_mix(rows)


@SETTINGS
@given(st.one_of(ROWS, EDGES))
def test_plan_preferring_upsert_on_ties_is_optimal(rows: int) -> None:
    p = plan(rows, prefer_upsert_on_tie=True)
    assert_consistent(p)
    assert (p.credits, p.calls, p.bulk_jobs) == brute.best_mix(rows, upsert_on_tie=True)


@SETTINGS
@given(ROWS)
def test_upsert_only_mode_is_optimal_without_bulk(rows: int) -> None:
    p = plan(rows, allow_bulk=False)
    assert_consistent(p)
    assert p.bulk_jobs == 0
    assert (p.credits, p.calls, p.bulk_jobs) == brute.best_mix(rows, allow_bulk=False)


@SETTINGS
@given(st.one_of(ROWS, EDGES))
def test_plan_never_costs_more_than_a_naive_rule(rows: int) -> None:
    p = plan(rows)
    for _name, naive in p.alternatives():
        assert_consistent(naive)
        assert naive.rows == rows
        assert p.credits <= naive.credits


@SETTINGS
@given(st.integers(min_value=0, max_value=brute.MAX_ROWS - 1))
def test_brute_force_cost_never_falls_as_rows_grow(rows: int) -> None:
    # What makes "the largest affordable prefix" well defined (and bisection correct).
    assert brute.min_credits(rows) <= brute.min_credits(rows + 1)


# --- the credit budget ----------------------------------------------------------------------


@SETTINGS
@given(st.one_of(ROWS, EDGES), st.integers(min_value=0, max_value=2_000), st.booleans())
def test_budget_plans_the_largest_affordable_prefix(
    rows: int, budget: int, allow_bulk: bool
) -> None:
    p = plan(rows, allow_bulk=allow_bulk, credits_available=budget)
    assert_consistent(p)
    assert p.credits <= budget
    assert p.rows + p.waiting_rows == rows
    assert p.credits == brute.min_credits(p.rows, allow_bulk=allow_bulk)
    if p.waiting_rows:
        assert brute.min_credits(p.rows + 1, allow_bulk=allow_bulk) > budget
        assert p.waiting_reason.startswith(f"credit budget: {budget} of ")
        assert f"{p.waiting_rows} of {rows} rows wait" in p.waiting_reason
    else:
        assert p.waiting_reason == ""
        assert p == plan(rows, allow_bulk=allow_bulk)


def test_budget_message_for_26000_rows() -> None:
    p = plan(26_000, credits_available=340)
    assert (p.rows, p.upsert_calls, p.credits, p.waiting_rows) == (3_400, 34, 340, 22_600)
    assert p.waiting_reason == (
        "credit budget: 340 of 600 credits needed are available; 22600 of 26000 rows wait"
    )


def test_an_empty_budget_gives_an_empty_plan() -> None:
    p = plan(26_000, credits_available=0)
    assert (p.rows, p.bulk_jobs, p.upsert_calls, p.credits, p.waiting_rows) == (0, 0, 0, 0, 26_000)
    assert "0 of 600 credits" in p.waiting_reason


def test_a_budget_of_one_job_buys_a_full_bulk_job() -> None:
    p = plan(60_000, credits_available=500)
    assert (p.bulk_rows, p.upsert_calls, p.credits, p.waiting_rows) == ((25_000,), 0, 500, 35_000)


def test_one_million_rows() -> None:
    p = plan(1_000_000)
    assert_consistent(p)
    assert (p.bulk_jobs, p.upsert_calls, p.credits) == (40, 0, 20_000)
    assert dict(p.alternatives())["all upsert"].credits == 100_000
