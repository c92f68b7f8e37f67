"""Benchmark: the initial sync (Celery workers, ledger, state machine) against its floor.

For ``--rows`` demo orders (default 1,000,000) against a zohosim process (instant jobs unless
``--job-speed``), in one run:

* **pipeline** — ``start_initial_run`` + ``ordersync.initial.start`` with one real worker
  (``--concurrency`` pool processes, ``--in-flight`` batches), until the run is done: wall time,
  rows/s, bulk credits (must be 500 per 25,000 rows), peak RSS (VmHWM) of the worker's processes;
* **floor** — the same work by one plain process in sequence, no Celery and no ledger: per batch
  of ``--batch-size`` rows, keyset ``COPY`` of the serialiser's expressions, zip, upload, create
  job, wait (polling every 20 ms), download, one set-based version-checked ``UPDATE``;
* the ratio pipeline / floor.

With ``--job-speed realistic`` (25,000 rows a minute; run it on ``--rows 200000
--skip-floor``) it also prints the ideal: whole jobs back to back, ``--in-flight`` at a time,
all our own work hidden behind them, and the ratio to it.

The pipeline runs first on the freshly seeded table; then every row is made pending again
(``UPDATE … SET synced = false``, ``VACUUM``) and zohosim is reset, and the floor runs: the
floor gets the cleaner table, so the ratio is not flattered. ``--rounds N`` then runs the
pipeline and the overlapped floor alternately N-1 times more (each on a reset table) and prints
each round's ratios and their medians: on a machine whose speed moves from minute to minute,
compare within a round.

    .venv/bin/python bench/initial_sync.py --rows 1000000 [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import demo, validate  # noqa: E402
from pipeline.arrays import int_array, text_array  # noqa: E402
from pipeline.initial_sync import run_progress, start_initial_run  # noqa: E402
from pipeline.initial_sync.decisions import job_remaining, poll_countdown  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.legacy.names import column_info  # noqa: E402
from pipeline.legacy.render import header_line  # noqa: E402
from pipeline.report import initial_run_plan  # noqa: E402
from pipeline.serialize import select_list, session_timezone_sql  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402
from pipeline.zoho.client import ZohoClient  # noqa: E402
from pipeline.zoho.limits import BULK_JOB_CREDITS  # noqa: E402
from pipeline.zoho.results import JobState, iter_result_rows  # noqa: E402
from tests.fixtures.celery import (  # noqa: E402
    WorkerProcess,
    cleanup_celery_env,
    make_celery_env,
)
from tests.fixtures.procstat import (  # noqa: E402
    CpuMeter,
    DatabaseCpu,
    group_seconds,
    own_seconds,
    postgres_root,
)
from tests.fixtures.services import (  # noqa: E402
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
)
from tests.fixtures.sim_settings import sim_env  # noqa: E402
from zohosim.cli import job_speed  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402


def env_for(dsn: str, sim: SimProcess, prefix: str, work: Path, args: argparse.Namespace) -> dict:
    return {
        "ORDERSYNC_SOURCE_DSN": dsn,
        **sim_env(sim, prefix),
        "ORDERSYNC_ZOHO_DAILY_CREDIT_BUDGET": "1000000",
        "ORDERSYNC_SYNC_REDIS_URL": REDIS_URL,
        "ORDERSYNC_SYNC_BATCH_SIZE": str(args.batch_size),
        "ORDERSYNC_SYNC_BATCHES_IN_FLIGHT": str(args.in_flight),
        "ORDERSYNC_SYNC_WORK_DIR": str(work),
    }


POLLER = "bench-progress"  # the bench's own progress queries: not the pipeline's cost


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def run_pipeline(
    settings: Settings, env: dict, work: Path, args: argparse.Namespace, groups: dict
) -> dict:
    cenv = make_celery_env(extra_env=env)
    sender = cenv.make_app()
    worker = WorkerProcess(cenv, work / "worker.log", concurrency=args.concurrency)
    try:
        worker.wait_ready(sender)
        meter = CpuMeter({**groups, "workers": lambda: group_seconds([worker.pid]),
                          "bench": lambda: own_seconds(os.getpid())})  # fmt: skip
        meter.start()
        started = time.perf_counter()
        run_id = start_initial_run(settings)  # its forecast: one pass with the field rules
        forecast = time.perf_counter() - started
        forecast_cpu = meter.lap()  # nothing else runs yet: the forecast's own CPU
        sender.send_task("ordersync.initial.start", kwargs={"run_id": run_id})
        poller = connect(settings, application=POLLER)  # one, not one per poll
        try:
            while True:
                progress = run_progress(settings, run_id, poller)
                if progress["state"] != "running":
                    break
                time.sleep(0.1)
        finally:
            poller.close()
        wall = time.perf_counter() - started
        cpu = meter.stop()
        rss = {"main": vm_hwm_mb(worker.pid)}
        rss.update({f"child-{i}": vm_hwm_mb(p) for i, p in enumerate(worker.child_pids())})
    finally:
        worker.stop()
        sender.close()
        cleanup_celery_env(cenv)
        if args.worker_log:
            Path(args.worker_log).write_text(worker.log())
    return {"state": progress["state"], "wall_s": wall, "forecast_s": forecast,
            "forecast_cpu_s": forecast_cpu,
            "rows": progress["rows_synced"],
            "batches": progress["batches"], "peak_rss_mb": rss, "cpu_s": cpu}  # fmt: skip


FloorBatch = tuple[int, int]  # (lo exclusive, hi inclusive) keys of one batch's pending rows


def floor_ranges(conn: Any, batch_size: int) -> list[FloorBatch]:
    """The batches' key ranges: every ``batch_size``-th pending key, one index probe per batch."""
    ranges: list[FloorBatch] = []
    last = 0
    with conn.cursor() as cur:
        while True:
            cur.execute(
                "SELECT max(id) FROM (SELECT id FROM orders WHERE NOT synced AND id > %s"
                " ORDER BY id LIMIT %s) s",
                (last, batch_size),
            )
            hi = cur.fetchone()[0]
            if hi is None:
                break
            ranges.append((last, int(hi)))
            last = int(hi)
    conn.commit()
    return ranges


# The floor's three statements, key-ranged so that each touches only its batch's rows (the
# partial index on pending rows, then the primary key); ``--explain`` prints their plans. Like
# the pipeline, the floor sends only rows that pass the mapping's field rules
# (``pipeline.validate``): the rules are evaluated once per row, in the keys query, and the
# COPY reads those keys: a hashed ``= ANY`` filter over the key range (``t.id + 0`` keeps the
# list out of the index condition, where the btree would be descended once per key: ~30 % more).
FLOOR_KEYS = (
    "SELECT id, sync_version FROM orders t WHERE NOT synced AND id > %(lo)s AND id <= %(hi)s"
    " AND NOT {broken} ORDER BY id"
)
FLOOR_COPY = (
    "SELECT {cols} FROM orders t WHERE NOT synced AND t.id > {lo} AND t.id <= {hi}"
    " AND t.id + 0 = ANY(%(ids)s::bigint[]) ORDER BY t.id"
)
FLOOR_MARK = (
    "UPDATE orders t SET synced = true, zoho_id = u.zid"
    " FROM unnest(%(ids)s::bigint[], %(versions)s::bigint[], %(zids)s::text[]) AS u(id, v, zid)"
    " WHERE t.id = u.id AND t.sync_version = u.v AND t.id > %(lo)s AND t.id <= %(hi)s"
)


class Floor:
    """One process's share of the floor: a connection and a client, reused for every batch."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings = settings
        self.work = work
        self.client = ZohoClient.from_settings(settings)
        self.conn = connect(settings)
        self.conn.set_session(isolation_level="REPEATABLE READ")
        with self.conn.cursor() as cur:
            cur.execute(session_timezone_sql(settings.org_timezone))
        self.conn.commit()
        self.cols = select_list(settings.mapping, "t").as_string(self.conn)
        broken = validate.invalid_predicate(settings, "t", column_info(self.conn, settings))
        rules = "false" if broken is None else broken.as_string(self.conn).replace("%", "%%")
        self.keys_sql = FLOOR_KEYS.format(broken=rules)

    def batch(self, lo: int, hi: int) -> int:
        """COPY, zip, upload, create job, wait, download, mark: one batch; rows marked."""
        mapping = self.settings.mapping
        sink = io.BytesIO()
        sink.write(header_line(mapping))
        with self.conn.cursor() as cur:  # one snapshot: the keys and the text of the same rows
            cur.execute(self.keys_sql, {"lo": lo, "hi": hi})
            versions = dict(cur.fetchall())
            query = cur.mogrify(
                FLOOR_COPY.format(cols=self.cols.replace("%", "%%"), lo=int(lo), hi=int(hi)),
                {"ids": int_array(versions)},
            ).decode()
            cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", sink)
        self.conn.commit()
        path = self.work / f"floor-{hi}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("batch.csv", sink.getvalue())
        file_id = self.client.upload(path)
        job_id = self.client.create_upsert_job(file_id, mapping)
        created, polls, before = time.perf_counter(), 0, None
        while True:  # the pipeline's poll schedule: no extra calls for zohosim to answer
            job = self.client.get_job(job_id)
            if job.terminal:
                break
            age = time.perf_counter() - created
            processed = sum(n or 0 for n in (job.added, job.updated, job.skipped))
            remaining = job_remaining(job.total, processed, age, before)
            before = (processed, age)
            time.sleep(poll_countdown(polls, age, remaining))
            polls += 1
        assert job.state is JobState.COMPLETED and job.download_url
        result = self.client.download_result(job.download_url, self.work / f"floor-{hi}-r.zip")
        ids, vers, zids = [], [], []
        for row in iter_result_rows(result, mapping.unique_field):
            if row.ok:
                key = int(row.key)
                ids.append(key)
                vers.append(versions[key])
                zids.append(row.record_id)
        with self.conn.cursor() as cur:
            params = {"ids": int_array(ids), "versions": int_array(vers), "zids": text_array(zids),
                      "lo": lo, "hi": hi}  # fmt: skip
            cur.execute(FLOOR_MARK, params)
            marked = cur.rowcount
        self.conn.commit()
        path.unlink()
        result.unlink()
        return marked

    def close(self) -> None:
        self.conn.close()
        self.client.close()


def explain_floor(settings: Settings, lo: int, hi: int) -> dict[str, str]:
    """The floor's plans for one batch (the mark's on an empty array: it is rolled back anyway)."""
    floor = Floor(settings, Path(tempfile.gettempdir()))
    plans = {}
    try:
        with floor.conn.cursor() as cur:
            for name, sql, params in (
                ("keys", floor.keys_sql, {"lo": lo, "hi": hi}),
                ("copy", FLOOR_COPY.format(cols=floor.cols.replace("%", "%%"), lo=lo, hi=hi),
                 {"ids": list(range(lo + 1, hi + 1))}),
                ("mark", FLOOR_MARK, {"ids": list(range(lo + 1, hi + 1)), "lo": lo, "hi": hi,
                                      "versions": [1] * (hi - lo), "zids": ["x"] * (hi - lo)}),
            ):  # fmt: skip
                cur.execute("EXPLAIN " + sql, params)
                lines = (r[0] if len(r[0]) <= 200 else r[0][:200] + " …" for r in cur.fetchall())
                plans[name] = "\n".join(lines)
        floor.conn.rollback()
    finally:
        floor.close()
    return plans


def run_floor(settings: Settings, work: Path, batch_size: int) -> dict:
    """The same work in one process, in sequence: no Celery, no ledger, no claims."""
    work.mkdir(parents=True, exist_ok=True)  # the pipeline may never have made it (all upserts)
    floor = Floor(settings, work)
    started = time.perf_counter()  # connected first, as the pipeline's worker is
    try:
        ranges = floor_ranges(floor.conn, batch_size)
        rows = sum(floor.batch(lo, hi) for lo, hi in ranges)
    finally:
        floor.close()
    return {"wall_s": time.perf_counter() - started, "rows": rows, "jobs": len(ranges)}


_FLOOR: Floor | None = None


def _floor_init(env: dict[str, str], work: str) -> None:
    global _FLOOR
    _FLOOR = Floor(load_settings(env=env), Path(work))


def _floor_ready(_n: int) -> None:
    time.sleep(0.3)  # long enough that each process of the pool takes one of these


def _floor_batch(lo: int, hi: int) -> int:
    assert _FLOOR is not None
    return _FLOOR.batch(lo, hi)


def run_overlapped_floor(
    env: dict[str, str], settings: Settings, work: Path, args: argparse.Namespace
) -> dict:
    """The same steps with ``--in-flight`` batches at once: one plain process per batch in flight.

    Each process keeps one connection and one client and runs whole batches (COPY to mark); the
    batches' key ranges are read first, by the same index probes a claim makes.
    """
    work.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.in_flight, mp_context=ctx, initializer=_floor_init,
                             initargs=(env, str(work))) as pool:  # fmt: skip
        # every process started, connected and imported before the clock starts, as the
        # pipeline's worker is: start-up is neither side's work
        list(pool.map(_floor_ready, range(args.in_flight)))
        started = time.perf_counter()
        conn = connect(settings)
        try:
            ranges = floor_ranges(conn, args.batch_size)
        finally:
            conn.close()
        rows = sum(pool.map(_floor_batch, *zip(*ranges, strict=True)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "rows": rows, "jobs": len(ranges)}


def reset(settings: Settings, sim: SimProcess) -> None:
    """Every row pending again, the table vacuumed, zohosim emptied: the next run starts clean."""
    conn = connect(settings)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE orders SET synced = false, zoho_id = NULL")
    finally:
        conn.close()
    settle(settings)
    sim.admin.reset()


def settle(settings: Settings) -> None:
    """``VACUUM ANALYZE orders`` then ``CHECKPOINT``: no autovacuum of what came before runs
    during a measured run, the statistics are fresh, and every run starts just after a
    checkpoint, so each pays the same full-page writes for the pages it touches (a checkpoint
    falling inside one run and not another would charge it alone for them)."""
    conn = connect(settings)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE orders")
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


def round_summary(pipe: dict, floor: dict, floor_cpu: dict[str, float], credits_ok: bool) -> dict:
    """The pipeline beside a floor run right after it, as ratios (server-wide PostgreSQL, this
    database's backends, and the server without the forecast's pass: the floor makes none)."""
    server, db = floor_cpu.get("postgres", 0.0), floor_cpu.get("postgres_db", 0.0)
    pg = pipe["cpu_s"]["postgres"]
    rest = pg - pipe["forecast_cpu_s"]["postgres"]
    return {
        "pipeline_wall_s": round(pipe["wall_s"], 2),
        "floor_wall_s": round(floor["wall_s"], 2),
        "ratio": round(pipe["wall_s"] / floor["wall_s"], 3),
        "postgres_cpu_ratio": round(pg / server, 3) if server else None,
        "postgres_db_cpu_ratio": round(pipe["cpu_s"]["postgres_db"] / db, 3) if db else None,
        "postgres_cpu_ratio_without_forecast": round(rest / server, 3) if server else None,
        "zohosim_share_of_wall": round(pipe["cpu_s"].get("zohosim", 0.0) / pipe["wall_s"], 3),
        "credits_ok": credits_ok,
    }


def cpu_figures(seconds: dict[str, float], wall: float) -> dict[str, float]:
    out = {name: round(value, 2) for name, value in seconds.items()}
    out["zohosim_share_of_wall"] = round(seconds.get("zohosim", 0.0) / wall, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=25_000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--job-speed", default="instant", help="zohosim --job-speed")
    parser.add_argument("--skip-floor", action="store_true", help="no floor at all")
    parser.add_argument("--skip-sequential", action="store_true",
                        help="only the overlapped floor")  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="print the floor's query plans")
    parser.add_argument("--worker-log", help="copy the worker's log to this file")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pipeline and overlapped floor this many times, alternately,"
                        " each round's ratios and their medians printed")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.rounds > 1 and args.skip_floor):
        parser.error("--rounds needs a positive count and the overlapped floor")

    name = create_database("ordersync_bench")
    prefix = f"bench:initial:{uuid.uuid4().hex}"
    sim = SimProcess(job_speed=args.job_speed)
    figures: dict[str, Any] = {"rows": args.rows, "batch_size": args.batch_size,
                               "in_flight": args.in_flight, "concurrency": args.concurrency,
                               "job_speed": args.job_speed}  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="bench-initial-") as tmp:
            work = Path(tmp)
            dsn = f"{PG_SERVER}/{name}"
            env = env_for(dsn, sim, prefix, work / "work", args)
            full_env = {**env, "ORDERSYNC_SYNC_BROKER_URL": Settings().broker_url}
            settings = load_settings(env=full_env)
            conn = connect(settings)
            try:
                seeded = demo.seed(conn, settings, args.rows, bad_rows=0, seed=42)
                postmaster = postgres_root(conn)
            finally:
                conn.close()
            schema.install(settings)
            figures["seed_s"] = round(seeded.seconds, 1)
            # where the time goes: zohosim, server-wide PostgreSQL (measure on a quiet machine)
            # and this database's backends alone (other clients of the server left out)
            db_cpu = DatabaseCpu(dsn, exclude_application=POLLER)
            groups = {"zohosim": lambda: group_seconds([sim.proc.pid]),
                      "postgres": lambda: group_seconds([postmaster]),
                      "postgres_db": db_cpu.read,
                      "autovacuum": lambda: db_cpu.read("autovacuum worker")}  # fmt: skip
            settle(settings)  # the pipeline starts on a vacuumed table, as each floor does

            pipe = run_pipeline(settings, env, work, args, groups)
            credits = sim.admin.credits()
            bulk = int(credits["by_api"].get("bulk_create", 0))
            # As the run prices its claims: whole bulk jobs where cheaper, upserts for the rest.
            expected = initial_run_plan(args.rows, args.batch_size).bulk_jobs * BULK_JOB_CREDITS
            figures["pipeline"] = {
                "state": pipe["state"],
                "wall_s": round(pipe["wall_s"], 2),
                "forecast_s": round(pipe["forecast_s"], 2),
                "rows_synced": pipe["rows"],
                "rows_per_s": round(pipe["rows"] / pipe["wall_s"]),
                "bulk_credits": bulk,
                "bulk_credits_expected": expected,
                "credits_ok": bulk == expected,
                "peak_rss_mb": {k: round(v, 1) for k, v in pipe["peak_rss_mb"].items()},
                "peak_rss_max_mb": round(max(pipe["peak_rss_mb"].values()), 1),
                "cpu_s": cpu_figures(pipe["cpu_s"], pipe["wall_s"]),
                # the forecast's pass is the run's first step, alone: its own PostgreSQL CPU
                "forecast_postgres_cpu_s": round(pipe["forecast_cpu_s"]["postgres"], 2),
            }
            if args.job_speed != "instant":
                rate = float(job_speed(args.job_speed))
                queue = float(sim.initial_config.get("job_queue_seconds", 0.0))
                batches = -(-args.rows // args.batch_size)
                # jobs back to back, `in_flight` at a time, everything else hidden behind them
                waves = -(-batches // args.in_flight)
                ideal = waves * (queue + args.batch_size / rate)
                figures["ideal_s"] = round(ideal, 2)
                figures["ratio_to_ideal"] = round(pipe["wall_s"] / ideal, 3)
            floors = []
            if not args.skip_floor and not args.skip_sequential:
                floors.append(
                    ("floor", lambda: run_floor(settings, work / "work", args.batch_size))
                )
            if not args.skip_floor:
                floors.append(
                    ("overlapped_floor",
                     lambda: run_overlapped_floor(full_env, settings, work / "work", args))
                )  # fmt: skip
            if args.explain:  # on the table as each floor finds it
                reset(settings, sim)
                conn = connect(settings)
                try:
                    lo, hi = floor_ranges(conn, args.batch_size)[0]
                finally:
                    conn.close()
                figures["floor_plans"] = explain_floor(settings, lo, hi)

            def measure_floor(run: Any) -> tuple[dict, dict[str, float]]:
                reset(settings, sim)
                meter = CpuMeter({**groups, "floor": lambda: group_seconds(
                    [os.getpid()], exclude=[sim.proc.pid])})  # fmt: skip
                meter.start()
                floor = run()
                return floor, meter.stop()

            rounds: list[dict[str, Any]] = []
            for key, run in floors:
                floor, cpu = measure_floor(run)
                summary = round_summary(pipe, floor, cpu, bulk == expected)
                if key == "overlapped_floor":
                    rounds.append(summary)
                figures[key] = {
                    "wall_s": round(floor["wall_s"], 2),
                    "rows_synced": floor["rows"],
                    "rows_per_s": round(floor["rows"] / floor["wall_s"]),
                    "jobs": floor["jobs"],
                    "cpu_s": cpu_figures(cpu, floor["wall_s"]),
                }
                figures[f"ratio_to_{key}"] = summary["ratio"]
                for group in ("postgres", "postgres_db"):
                    figures[f"{group}_cpu_ratio_to_{key}"] = summary[f"{group}_cpu_ratio"]
                figures[f"postgres_cpu_ratio_to_{key}_without_forecast"] = (
                    summary["postgres_cpu_ratio_without_forecast"]
                )
            for _ in range(args.rounds - 1):  # the machine's noise: alternate, then take medians
                reset(settings, sim)
                pipe = run_pipeline(settings, env, work, args, groups)
                spent = int(sim.admin.credits()["by_api"].get("bulk_create", 0))
                floor, cpu = measure_floor(floors[-1][1])
                rounds.append(round_summary(pipe, floor, cpu, spent == expected))
            if rounds:
                figures["rounds"] = rounds
                figures["median"] = {
                    k: round(statistics.median(r[k] for r in rounds), 3)
                    if all(r[k] is not None for r in rounds) else None
                    for k in rounds[0] if k != "credits_ok"
                }  # fmt: skip
                figures["median"]["credits_ok"] = all(r["credits_ok"] for r in rounds)
            db_cpu.close()
    finally:
        sim.stop()
        drop_database(name)
        delete_keys(prefix)

    if args.json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    print_figures(figures, args)
    return 0


def _cpu_line(cpu: dict[str, float]) -> str:
    parts = [f"{k} {v:.1f}" for k, v in cpu.items() if k != "zohosim_share_of_wall"]
    return "CPU s: " + ", ".join(parts) + f"  (zohosim {cpu['zohosim_share_of_wall']:.0%} of wall)"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_figures(figures: dict[str, Any], args: argparse.Namespace) -> None:
    p = figures["pipeline"]
    print(
        f"initial sync of {args.rows:,} rows, batches of {args.batch_size:,}, {args.in_flight}"
        f" in flight, worker -c {args.concurrency}, jobs {args.job_speed}"
    )
    print(
        f"  pipeline: {p['wall_s']:8.2f} s  {p['rows_per_s']:>8,} rows/s  state {p['state']}"
        f"  (of which the run's forecast {p['forecast_s']:.2f} s, PostgreSQL CPU"
        f" {p['forecast_postgres_cpu_s']:.1f} s: the floor has none)"
    )
    print(
        f"            bulk credits {p['bulk_credits']:,} (expected"
        f" {p['bulk_credits_expected']:,})  peak RSS {p['peak_rss_max_mb']} MB (max of processes)"
    )
    print(f"            {_cpu_line(p['cpu_s'])}")
    if "ideal_s" in figures:
        print(
            f"  ideal:    {figures['ideal_s']:8.2f} s  (jobs back to back, {args.in_flight} in"
            f" flight)  ratio pipeline/ideal: {figures['ratio_to_ideal']:.2f}"
        )
    labels = {
        "floor": "one process, COPY/zip/upload/job/wait/download/UPDATE in sequence",
        "overlapped_floor": f"the same steps, {args.in_flight} plain processes, one batch each",
    }
    for key, label in labels.items():
        if key not in figures:
            continue
        f, title = figures[key], key.replace("_", " ")
        print(f"  {title}: {f['wall_s']:8.2f} s  {f['rows_per_s']:>8,} rows/s  ({label})")
        print(f"            {_cpu_line(f['cpu_s'])}")
        pg, db = (figures[f"{g}_cpu_ratio_to_{key}"] for g in ("postgres", "postgres_db"))
        rest = figures[f"postgres_cpu_ratio_to_{key}_without_forecast"]
        print(
            f"  ratio pipeline/{title}: {figures[f'ratio_to_{key}']:.2f}"
            f"  PostgreSQL CPU pipeline/{title}: server {_ratio(pg)}, this database {_ratio(db)}"
            f"; server without the forecast {_ratio(rest)}"
        )
    rounds = figures.get("rounds", [])
    if len(rounds) > 1:
        print("  rounds (pipeline, then the overlapped floor; the machine's noise moves both):")
        for i, r in enumerate(rounds, 1):
            print(f"    {i}: {r['pipeline_wall_s']:.2f} s / {r['floor_wall_s']:.2f} s ="
                  f" {r['ratio']:.2f}  PostgreSQL CPU {_ratio(r['postgres_cpu_ratio'])}"
                  f" ({_ratio(r['postgres_cpu_ratio_without_forecast'])} without the forecast)"
                  f"  zohosim {r['zohosim_share_of_wall']:.0%} of wall")  # fmt: skip
        m = figures["median"]
        print(f"    median: {m['ratio']:.2f}  PostgreSQL CPU {_ratio(m['postgres_cpu_ratio'])}"
              f" ({_ratio(m['postgres_cpu_ratio_without_forecast'])} without the forecast)"
              f"  zohosim {m['zohosim_share_of_wall']:.0%} of wall")  # fmt: skip
    for name, plan in figures.get("floor_plans", {}).items():
        print(f"  plan of the floor's {name}:")
        print("    " + plan.replace("\n", "\n    "))


if __name__ == "__main__":
    sys.exit(main())
