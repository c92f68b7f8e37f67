"""Pure unit tests: progress lines, in-place redraw on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from cli.commands.processes import command_line
from cli.commands.status import human_duration
from cli.commands.sync import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    follow_run,
    format_progress,
)
from pipeline.ledger import BatchKind, BatchState
from pipeline.progress import (
    ASSUMED_JOB_ROWS_PER_S,
    OpenBatch,
    SpeedSource,
    estimate_seconds,
    in_flight,
    job_speed,
)
from pipeline.settings import Settings


def progress(state: str = "running", done: int = 0, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": 7,
        "state": state,
        "rows_total": 60_000,
        "rows_done": done,
        "rows_synced": done,
        "rows_skipped": 0,
        "batches": {},
        "credits_spent": 0,
        "started_at": "2026-01-01T00:00:00+00:00",
        "elapsed_s": 10.0,
        "rate_rows_s": 0.0,
        "eta_s": None,
    }
    return base | more


def reader(steps: Sequence[dict[str, Any] | BaseException]) -> Any:
    feed: Iterator[dict[str, Any] | BaseException] = iter(steps)

    def read(settings: Settings, run_id: int) -> dict[str, Any]:
        assert run_id == 7
        step = next(feed)
        if isinstance(step, BaseException):
            raise step
        return step

    return read


def test_format_progress() -> None:
    lines = format_progress(
        progress(
            done=25_000,
            rows_synced=24_990,
            rows_skipped=10,
            batches={"reconciled": 1, "job_created": 1, "extracted": 1},
            credits_spent=1_000,
            elapsed_s=80,
            rate_rows_s=312.5,
            eta_s=112,
        )
    )
    assert lines == [
        "run 7 running: 25,000 of 60,000 rows (41.7%), synced 24,990, skipped 10"
        " | 1m20s elapsed, 312 rows/s, ETA 1m52s",
        "batches: extracted 1, job_created 1, reconciled 1 | credits spent 1,000",
    ]
    empty = format_progress(progress(rows_total=0, eta_s=None))
    assert "0 of 0 rows," in empty[0] and "ETA -" in empty[0]
    assert empty[1] == "batches: none yet | credits spent 0"


def test_human_duration() -> None:
    assert [human_duration(s) for s in (None, 0, 45, 200, 7_500, 300_000)] == [
        "-",
        "0s",
        "45s",
        "3m20s",
        "2h05m",
        "3d11h",
    ]


def test_terminal_redraws_in_place() -> None:
    out = io.StringIO()
    steps = [progress(done=0), progress(done=30_000), progress("done", done=60_000)]
    code = follow_run(
        Settings(), 7, reader(steps), out=out, tty=True, sleep=lambda s: None, explain=None
    )
    assert code == EXIT_OK
    text = out.getvalue()
    frames = text.split("\x1b[2F\x1b[J")  # up two lines, clear to the end: one redraw each
    assert len(frames) == 3
    assert "0 of 60,000" in frames[0] and "30,000 of 60,000" in frames[1]
    assert frames[2].endswith("run 7 done\n") and "60,000 of 60,000 rows (100.0%)" in frames[2]


def test_plain_output_prints_only_when_the_run_moves() -> None:
    out = io.StringIO()
    steps = [
        progress(done=0, elapsed_s=1),
        progress(done=0, elapsed_s=2),  # only time moved: no line
        progress(done=25_000, elapsed_s=3),
        progress("failed", done=25_000, elapsed_s=4, error="token revoked"),
    ]
    code = follow_run(
        Settings(), 7, reader(steps), out=out, tty=False, sleep=lambda s: None, explain=None
    )
    assert code == EXIT_RUN_FAILED
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\x1b[" not in out.getvalue()
    assert lines[0].startswith("run 7 running: 0 of 60,000")
    assert lines[1].startswith("run 7 running: 25,000 of 60,000")
    assert lines[2].startswith("run 7 failed: 25,000")
    assert lines[3] == "run 7 ended failed: token revoked"


def test_ctrl_c_stops_following() -> None:
    out = io.StringIO()
    steps: list[Any] = [progress(done=1), KeyboardInterrupt()]
    code = follow_run(
        Settings(), 7, reader(steps), out=out, tty=False, sleep=lambda s: None, explain=None
    )
    assert code == EXIT_INTERRUPTED
    assert "stopped following; run 7 goes on (ordersync sync follow 7)" in out.getvalue()


def test_process_command_lines() -> None:
    assert command_line("web", ["--port", "9000"]) == [
        sys.executable,
        "-m",
        "cli.web",
        "--port",
        "9000",
    ]
    worker = command_line("worker", ["-c", "2"])
    assert worker[1:7] == ["-m", "celery", "-A", "tasks.app", "worker", "-Q"]
    assert "ordersync.db,ordersync.zoho" in worker and "-E" in worker and worker[-2:] == ["-c", "2"]
    assert "redbeat.RedBeatScheduler" in command_line("beat", [])


def _settings() -> Settings:
    return Settings(batch_size=25_000, batches_in_flight=3)


def test_job_speed_prefers_zoho_counts_then_finished_jobs_then_the_assumption() -> None:
    running = [
        OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, 10_000, 20.0),
        OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, 5_000, 20.0),
        OpenBatch(BatchKind.BULK, BatchState.UPLOADED, 25_000),
    ]
    zoho = job_speed(running, finished_rows=50_000, finished_s=100.0)
    assert (zoho.rows_per_s, zoho.source, zoho.jobs) == (375.0, SpeedSource.ZOHO, 2)
    quiet = [OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, None, 5.0)]
    history = job_speed(quiet, finished_rows=50_000, finished_s=100.0)
    assert (history.rows_per_s, history.source) == (500.0, SpeedSource.HISTORY)
    assumed = job_speed(quiet, finished_rows=0, finished_s=0.0)
    assert (assumed.rows_per_s, assumed.source) == (ASSUMED_JOB_ROWS_PER_S, SpeedSource.ASSUMED)


def test_estimate_lays_jobs_on_the_slots_in_flight() -> None:
    three = [OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, 0, 1.0)] * 3
    # three jobs of 60 s side by side, then the fourth 25,000 rows alone: 120 s
    assert estimate_seconds(three, 25_000, 25_000, 3, 25_000 / 60) == 120.0
    # what Zoho has done comes off; one slot: all in a row
    half = [OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 1_000, 500, 1.0)]
    assert estimate_seconds(half, 1_500, 1_000, 1, 100.0) == 5.0 + 10.0 + 5.0
    # a job last polled 2 s ago has gone on meanwhile
    polled = [OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 1_000, 500, 5.0, since_poll=2.0)]
    assert estimate_seconds(polled, 0, 1_000, 1, 100.0) == 3.0
    upserts = [OpenBatch(BatchKind.REALTIME, BatchState.EXTRACTED, 100)]
    assert estimate_seconds(upserts, 0, 25_000, 3, 100.0) == 0.0


def test_first_minute_shows_jobs_and_an_eta_from_the_job_time() -> None:
    """The first minute of the demo: nothing reconciled yet, three jobs running."""
    batches = [
        OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, 12_500, 30.0),
        OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, 12_500, 30.0),
        OpenBatch(BatchKind.BULK, BatchState.JOB_CREATED, 25_000, None, 2.0),
        OpenBatch(BatchKind.BULK, BatchState.EXTRACTED, 25_000),
    ]
    base = progress(done=0, rows_total=100_000, elapsed_s=35, eta_s=None,
                    batches={"extracted": 1, "job_created": 3})  # fmt: skip
    speed = job_speed(batches, 0, 0.0)
    lines = format_progress({**base, **in_flight(batches, speed, base, _settings())})
    # 12,500 left of two jobs at 416.7 rows/s: 30 s; the third job 60 s; the fourth after 30 s
    assert lines[0].endswith("ETA 1m30s"), lines[0]
    assert lines[2] == (
        "in flight: 25,000 rows being prepared, 75,000 rows uploaded to Zoho, 3 bulk jobs"
        " running, Zoho reports 25,000 of 50,000 rows processed (50%)"
        " | job speed 416 rows/s a job (Zoho's job counts)"
    )
    ended = format_progress(progress("done", done=60_000))
    assert len(ended) == 2  # no in-flight line once the run has ended
