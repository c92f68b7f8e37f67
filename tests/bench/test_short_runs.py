"""A short run of every benchmark under bench/, so none can break silently.

Each runs as a user would (``python bench/<name>.py … --json``) on small row counts, and its
JSON is checked for the figures its closing notes quote and for the properties that hold at
any size (credits spent = predicted, every row synced, floors measured beside the pipeline).
Speed is not asserted here: the figures are the benchmarks' own business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: float = 180.0) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{name}.py"), *args, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"bench/{name}.py failed:\n{output}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_initial_sync_pipeline_beside_both_floors() -> None:
    figures = run_bench("initial_sync", "--rows", "30000", "--batch-size", "10000",
                        "--rounds", "2")  # fmt: skip
    pipe = figures["pipeline"]
    assert pipe["state"] == "done" and pipe["rows_synced"] == 30000
    assert pipe["credits_ok"] and pipe["bulk_credits"] == 1500
    for floor in ("floor", "overlapped_floor"):
        assert figures[floor]["rows_synced"] == 30000 and figures[floor]["jobs"] == 3
        assert figures[f"ratio_to_{floor}"] > 0
    for group in ("zohosim", "postgres", "postgres_db", "workers"):  # where the time went
        assert pipe["cpu_s"][group] > 0, pipe["cpu_s"]
    # this database's backends are part of the server's
    assert pipe["cpu_s"]["postgres_db"] <= pipe["cpu_s"]["postgres"] + 0.05, pipe["cpu_s"]
    assert figures["overlapped_floor"]["cpu_s"]["floor"] > 0
    assert figures["overlapped_floor"]["cpu_s"]["postgres_db"] > 0
    assert 0 < pipe["forecast_s"] < pipe["wall_s"]
    # the forecast's own PostgreSQL CPU (a few 10 ms ticks here), part of the run's, and the
    # ratio without it
    assert 0 <= pipe["forecast_postgres_cpu_s"] < pipe["cpu_s"]["postgres"], pipe
    without = figures["postgres_cpu_ratio_to_overlapped_floor_without_forecast"]
    assert 0 < without <= figures["postgres_cpu_ratio_to_overlapped_floor"]
    # rounds: the first is the run above, each pays the same credits, medians lie between
    first, second = figures["rounds"]
    assert first["ratio"] == figures["ratio_to_overlapped_floor"]
    assert first["credits_ok"] and second["credits_ok"] and figures["median"]["credits_ok"]
    for key in ("ratio", "postgres_cpu_ratio", "zohosim_share_of_wall"):
        low, high = sorted((first[key], second[key]))
        assert low <= figures["median"][key] <= high, (key, figures["rounds"], figures["median"])


def test_credits_spent_equal_predicted_and_minimum() -> None:
    figures = run_bench("credits", "--rows", "1000,6000", "--bad", "0,10", "--churn", "200")
    assert figures["spent_is_minimum_and_predicted"], figures
    assert {c["rows"] for c in figures["cases"]} == {1000, 6000}


def test_extract_beside_its_floor() -> None:
    figures = run_bench("extract", "--rows", "30000", "--marks", "1", "--no-child")
    assert figures["batches"] == 2 and figures["floor_s"] > 0 and figures["ours_s"] > 0
    assert figures["mark_batch_rows"] == 25000


def test_realtime_latency_and_credits_beside_naive() -> None:
    figures = run_bench(
        "realtime", "--seconds", "4", "--rows", "100", "--rate", "20", "--max-delay", "3"
    )
    assert figures["left_pending"] == 0 and figures["delivered"] > 0
    assert figures["latency_s"]["n"] == figures["delivered"]
    assert figures["latency_s"]["max"] <= 3 + 2  # max_delay + a check and a call
    assert figures["ours"]["credits"] < figures["naive_per_change"]["credits"]


def test_realtime_with_and_without_the_notify_wake_up() -> None:
    figures = run_bench(
        "realtime", "--seconds", "4", "--rows", "100", "--rate", "20", "--max-delay", "3",
        "--check", "2", "--notify", "both",
    )  # fmt: skip
    off, on = figures["off"], figures["on"]
    assert off["woken_flushes"] == 0 and off["notifications"] == 0
    assert on["woken_flushes"] > 0 and on["notifications"] > 0
    assert on["latency_s"]["n"] > 0 and on["latency_s"]["p95"] < off["latency_s"]["p95"]


def test_notify_trigger_cost_beside_the_plain_trigger() -> None:
    figures = run_bench(
        "notify_trigger", "--rows", "2000", "--writers", "2", "--seconds", "1", "--repeat", "1"
    )
    for trigger in ("plain", "notify"):
        assert figures[trigger]["bulk_update_s"] > 0 and figures[trigger]["writers_tx_per_s"] > 0
    assert figures["bulk_update_ratio"] > 0 and figures["writers_ratio"] > 0


def test_verify_beside_its_floor_and_naive_read_back() -> None:
    figures = run_bench("verify", "--rows", "2000")
    assert figures["pending_after_sync"] == 0
    assert figures["verify"]["credits"] == figures["verify"]["estimate"]
    assert all(v == 0 for v in figures["verify"]["counts"].values())


def test_client_throughput_beside_naive() -> None:
    figures = run_bench("client", "--calls", "5", "--processes", "1,2")
    assert [r["processes"] for r in figures["runs"]] == [1, 2]
    assert all(r["records_ok"] == 500 * r["processes"] for r in figures["runs"])
    assert all(r["max_concurrent_seen"] <= r["concurrency_cap"] for r in figures["runs"])
