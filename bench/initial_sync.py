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
floor gets the cleaner table, so the ratio is not flattered.

    .venv/bin/python bench/initial_sync.py --rows 1000000 [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import demo  # noqa: E402
from pipeline.initial_sync import run_progress, start_initial_run  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
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


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def run_pipeline(settings: Settings, env: dict, work: Path, args: argparse.Namespace) -> dict:
    cenv = make_celery_env(extra_env=env)
    sender = cenv.make_app()
    worker = WorkerProcess(cenv, work / "worker.log", concurrency=args.concurrency)
    try:
        worker.wait_ready(sender)
        started = time.perf_counter()
        run_id = start_initial_run(settings)
        sender.send_task("ordersync.initial.start", kwargs={"run_id": run_id})
        while True:
            progress = run_progress(settings, run_id)
            if progress["state"] != "running":
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
        rss = {"main": vm_hwm_mb(worker.pid)}
        rss.update({f"child-{i}": vm_hwm_mb(p) for i, p in enumerate(worker.child_pids())})
    finally:
        worker.stop()
        sender.close()
        cleanup_celery_env(cenv)
        if args.worker_log:
            Path(args.worker_log).write_text(worker.log())
    return {"state": progress["state"], "wall_s": wall, "rows": progress["rows_synced"],
            "batches": progress["batches"], "peak_rss_mb": rss}  # fmt: skip


def run_floor(settings: Settings, work: Path, batch_size: int) -> dict:
    """The same work in one process, in sequence: no Celery, no ledger, no claims."""
    client = ZohoClient.from_settings(settings)
    conn = connect(settings)
    mapping = settings.mapping
    work.mkdir(parents=True, exist_ok=True)  # the pipeline may never have made it (all upserts)
    started = time.perf_counter()
    last = 0
    rows_marked = 0
    jobs = 0
    try:
        while True:
            sink = io.BytesIO()
            sink.write(header_line(mapping))
            with conn.cursor() as cur:
                cur.execute(session_timezone_sql(settings.org_timezone))
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS b (id bigint PRIMARY KEY, v bigint);"
                    " TRUNCATE b;"
                    " INSERT INTO b SELECT id, sync_version FROM orders"
                    " WHERE NOT synced AND id > %s ORDER BY id LIMIT %s",
                    (last, batch_size),
                )
                if cur.rowcount == 0:
                    conn.commit()
                    break
                query = (
                    "SELECT " + select_list(mapping, "t").as_string(conn)
                    + " FROM orders t JOIN b ON b.id = t.id ORDER BY t.id"
                )  # fmt: skip
                cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", sink)
                cur.execute("SELECT max(id) FROM b")
                last = int(cur.fetchone()[0])  # type: ignore[index]
            conn.commit()
            path = work / f"floor-{last}.zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                zf.writestr("batch.csv", sink.getvalue())
            file_id = client.upload(path)
            job_id = client.create_upsert_job(file_id, mapping)
            jobs += 1
            while True:
                job = client.get_job(job_id)
                if job.terminal:
                    break
                time.sleep(0.02)
            assert job.state is JobState.COMPLETED and job.download_url
            result = client.download_result(job.download_url, work / f"floor-{last}-result.zip")
            keys, ids = [], []
            for row in iter_result_rows(result, mapping.unique_field):
                if row.ok:
                    keys.append(int(row.key))
                    ids.append(row.record_id)
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE orders t SET synced = true, zoho_id = u.zid"
                    " FROM unnest(%s::bigint[], %s::text[]) AS u(id, zid) JOIN b ON b.id = u.id"
                    " WHERE t.id = u.id AND t.sync_version = b.v",
                    (keys, ids),
                )
                rows_marked += cur.rowcount
            conn.commit()
            path.unlink()
            result.unlink()
    finally:
        conn.close()
        client.close()
    return {"wall_s": time.perf_counter() - started, "rows": rows_marked, "jobs": jobs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=25_000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--job-speed", default="instant", help="zohosim --job-speed")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--worker-log", help="copy the worker's log to this file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

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
            broker = {"ORDERSYNC_SYNC_BROKER_URL": Settings().broker_url}
            settings = load_settings(env={**env, **broker})
            conn = connect(settings)
            try:
                seeded = demo.seed(conn, settings, args.rows, bad_rows=0, seed=42)
            finally:
                conn.close()
            schema.install(settings)
            figures["seed_s"] = round(seeded.seconds, 1)

            pipe = run_pipeline(settings, env, work, args)
            credits = sim.admin.credits()
            bulk = int(credits["by_api"].get("bulk_create", 0))
            # As the run prices its claims: whole bulk jobs where cheaper, upserts for the rest.
            expected = initial_run_plan(args.rows, args.batch_size).bulk_jobs * BULK_JOB_CREDITS
            figures["pipeline"] = {
                "state": pipe["state"],
                "wall_s": round(pipe["wall_s"], 2),
                "rows_synced": pipe["rows"],
                "rows_per_s": round(pipe["rows"] / pipe["wall_s"]),
                "bulk_credits": bulk,
                "bulk_credits_expected": expected,
                "credits_ok": bulk == expected,
                "peak_rss_mb": {k: round(v, 1) for k, v in pipe["peak_rss_mb"].items()},
                "peak_rss_max_mb": round(max(pipe["peak_rss_mb"].values()), 1),
            }
            if args.job_speed != "instant":
                rate = float(job_speed(args.job_speed))
                queue = float(sim.initial_config.get("job_queue_seconds", 0.0))
                batches = -(-args.rows // args.batch_size)
                # jobs back to back, `in_flight` at a time, everything else hidden behind them
                rounds = -(-batches // args.in_flight)
                ideal = rounds * (queue + args.batch_size / rate)
                figures["ideal_s"] = round(ideal, 2)
                figures["ratio_to_ideal"] = round(pipe["wall_s"] / ideal, 3)
            if not args.skip_floor:
                conn = connect(settings)
                conn.autocommit = True
                try:
                    with conn.cursor() as cur:
                        cur.execute("UPDATE orders SET synced = false, zoho_id = NULL")
                        cur.execute("VACUUM ANALYZE orders")
                finally:
                    conn.close()
                sim.admin.reset()
                floor = run_floor(settings, work / "work", args.batch_size)
                figures["floor"] = {
                    "wall_s": round(floor["wall_s"], 2),
                    "rows_synced": floor["rows"],
                    "rows_per_s": round(floor["rows"] / floor["wall_s"]),
                    "jobs": floor["jobs"],
                }
                figures["ratio"] = round(pipe["wall_s"] / floor["wall_s"], 3)
    finally:
        sim.stop()
        drop_database(name)
        delete_keys(prefix)

    if args.json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    p = figures["pipeline"]
    print(
        f"initial sync of {args.rows:,} rows, batches of {args.batch_size:,}, {args.in_flight}"
        f" in flight, worker -c {args.concurrency}, jobs {args.job_speed}"
    )
    print(f"  pipeline: {p['wall_s']:8.2f} s  {p['rows_per_s']:>8,} rows/s  state {p['state']}")
    print(
        f"            bulk credits {p['bulk_credits']:,} (expected"
        f" {p['bulk_credits_expected']:,})  peak RSS {p['peak_rss_max_mb']} MB (max of processes)"
    )
    if "ideal_s" in figures:
        print(
            f"  ideal:    {figures['ideal_s']:8.2f} s  (jobs back to back, {args.in_flight} in"
            f" flight)  ratio pipeline/ideal: {figures['ratio_to_ideal']:.2f}"
        )
    if "floor" in figures:
        f = figures["floor"]
        print(f"  floor:    {f['wall_s']:8.2f} s  {f['rows_per_s']:>8,} rows/s  (one process, "
              "COPY/zip/upload/job/wait/download/UPDATE in sequence)")  # fmt: skip
        print(f"  ratio pipeline/floor: {figures['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
