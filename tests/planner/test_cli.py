"""``ordersync plan`` as a script would call it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ordersync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plan_json_for_26000_rows() -> None:
    done = ordersync("plan", "26000", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert list(answer)[:4] == ["rows", "bulk_jobs", "upsert_calls", "credits"]
    assert (answer["rows"], answer["bulk_jobs"], answer["upsert_calls"], answer["credits"]) == (
        26_000,
        1,
        10,
        600,
    )


def test_plan_text_shows_the_naive_alternatives() -> None:
    done = ordersync("plan", "26000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["credits", "calls", "mix"]
    assert lines[2].split()[:3] == ["plan", "600", "11"]
    assert any(line.split()[:5] == ["bulk", "above", "5,000", "1,000", "2"] for line in lines)
    assert any(line.split()[:4] == ["all", "upsert", "2,600", "260"] for line in lines)


def test_plan_with_a_budget_says_what_waits() -> None:
    done = ordersync("plan", "26000", "--credits-available", "340", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["rows"], answer["credits"], answer["waiting_rows"]) == (3_400, 340, 22_600)
    assert "340 of 600 credits" in answer["waiting_reason"]


def test_plan_refuses_a_negative_count() -> None:
    done = ordersync("plan", "--", "-5")
    assert done.returncode == 2
    assert "must be >= 0" in done.stderr
