"""A short run of ``bench/zohosim.py`` in both modes, so the benchmark cannot break silently.

Speed is not asserted (the figures are the benchmark's business): the JSON must carry every
figure the text output prints, and those must be sane for the load that ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBES = {"create_job", "job_status", "upload", "upsert"}
SUMMARY = {"n", "p50_ms", "p95_ms", "max_ms"}


def run_bench(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "zohosim.py"), *args, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_latency_mode_figures() -> None:
    f = run_bench("--rows", "30000", "--probe-interval", "0.02")
    assert f["mode"] == "latency" and f["sim"] == "this checkout"
    assert (f["rows"], f["jobs"], f["rows_added"], f["records"]) == (30000, 2, 30000, 30000)
    assert f["wall_s"] > 0 and f["rows_per_s"] > 0 and f["probed_wall_s"] > 0
    assert f["sim_cpu_s"] > 0 and f["probed_sim_cpu_s"] > 0
    assert f["sim_cpu_share"] > 0
    # the floor does a part of zohosim's work on the same uploads: less CPU, never none
    assert 0 < f["stand_in_floor_cpu_s"] < f["sim_cpu_s"]
    # the ratio comes from the unrounded seconds: equal to that of the rounded ones within 10 %
    ratio = f["sim_cpu_s"] / f["stand_in_floor_cpu_s"]
    assert f["sim_cpu_over_floor"] == pytest.approx(ratio, rel=0.1)
    assert 20 < f["sim_peak_rss_mb"] < 4000
    for group in ("probes", "idle_probes", "server_side"):
        assert set(f[group]) == PROBES, group
        for kind, s in f[group].items():
            assert set(s) == SUMMARY and s["n"] > 0, (group, kind, s)
            assert 0 <= s["p50_ms"] <= s["p95_ms"] <= s["max_ms"], (group, kind, s)


def test_throughput_mode_figures() -> None:
    f = run_bench("--throughput", "--rows", "2000", "--threads", "2", "--seconds", "0.3")
    assert f["mode"] == "throughput"
    job, ups = f["bulk_job"], f["upserts"]
    assert job["rows"] == 2000 and job["total_s"] > 0 and job["result_bytes"] > 0
    assert ups["threads"] == 2 and ups["upsert100_records_per_s"] > 0
    assert ups["floor_health_calls_per_s"] > 0
