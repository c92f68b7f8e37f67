"""Benchmark: credits spent beside the proven minimum and the dry run's prediction.

For each volume (``--rows``) and share of bad rows (``--bad``: rows breaking a field rule, the
kinds Zoho refuses), on a fresh database and an emptied zohosim (instant jobs):

* **predicted** — what the dry run says the initial run will spend (``pipeline.accounting``);
* **spent** — the credits zohosim charged for the run, driven step by step in this process
  by the same pipeline functions the Celery tasks call (one batch at a time, ``--in-flight``
  batches claimed ahead, as a worker would);
* **minimum** — the proven floor for the rows Zoho took, each sent once:
  ``min over b of 500·b + ⌈max(0, n − 25,000·b)/10⌉`` (+1 for the org call when a bulk job
  uploads, the GET that reads the org id);
* **naive** — every pending row by upsert, and the article's rule (bulk above 5,000 rows).

Then a **churn** round: ``--churn`` rows edited in the legacy app (a tenth of them made bad),
one interval run: spent beside its plan and the minimum for the changed rows Zoho took (plus
the 1-credit field metadata read the run's mapping check makes once the cached copy is an hour
old: the plan counts it).

Target: spent = minimum (+1 org call) = predicted, in every case.

    .venv/bin/python bench/credits.py [--rows 1000,6000,30000] [--bad 0,2,10,50] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import accounting, demo, interval, planner  # noqa: E402
from pipeline import initial_sync as sync  # noqa: E402
from pipeline.initial_sync import Outcome, Step  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.secret import Secret  # noqa: E402
from pipeline.settings import Settings, SourceSettings  # noqa: E402
from pipeline.zoho.client import ZohoClient  # noqa: E402
from tests.fixtures.services import (  # noqa: E402
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
)
from tests.fixtures.sim_settings import FAST_RETRIES, sim_zoho  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402


def drive(conn: Any, settings: Settings, client: ZohoClient, first: Outcome) -> None:
    """Run the steps an outcome names, and the ones they name, until none is left (FIFO, as
    one worker takes them from its queue; countdowns are not waited for, polls are)."""
    queue: deque[Outcome] = deque([first])
    while queue:
        outcome = queue.popleft()
        step, run_id, batch_id = outcome.next_step, outcome.run_id, outcome.batch_id
        if step is None:
            continue
        if step is Step.POLL and outcome.countdown:
            time.sleep(min(outcome.countdown, 0.02))
        if step is Step.EXTRACT:
            assert run_id is not None
            result = sync.extract(conn, settings, run_id)
        elif step is Step.UPSERT:
            assert run_id is not None
            result = sync.upsert(conn, settings, client, run_id)
        elif step is Step.RENDER:
            result = sync.render(conn, settings, batch_id)  # type: ignore[arg-type]
        else:
            fn = {Step.UPLOAD: sync.upload, Step.CREATE_JOB: sync.create_job,
                  Step.POLL: sync.poll, Step.RECONCILE: sync.reconcile}[step]  # fmt: skip
            result = fn(conn, settings, client, batch_id)  # type: ignore[arg-type]
        queue.append(result)
        if result.more and result.run_id is not None:
            queue.append(Outcome(None, Step.EXTRACT, run_id=result.run_id))


def synced(conn: Any) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM orders WHERE synced")
        return int(cur.fetchone()[0])


def floor(rows: int, *, org_call: bool) -> int:
    """The proven minimum for ``rows`` rows each sent once (+1 for the org call if a bulk job)."""
    best = planner.plan(rows)
    return best.credits + (1 if org_call and best.bulk_jobs else 0)


def one_case(
    sim: SimProcess, rows: int, bad: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    name = create_database("ordersync_bench_credits")
    prefix = f"bench:credits:{uuid.uuid4().hex}"
    sim.admin.reset()
    zoho = sim_zoho(sim, prefix, daily_credit_budget=10_000_000, **FAST_RETRIES)
    settings = Settings(
        source=SourceSettings(dsn=Secret(f"{PG_SERVER}/{name}")),
        zoho=zoho,
        redis_url=REDIS_URL,
        work_dir=work / name,
        batch_size=args.batch_size,
        batches_in_flight=args.in_flight,
    )  # type: ignore[call-arg]
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    conn = connect(settings)
    client = ZohoClient.from_settings(settings)
    try:
        demo.seed(conn, settings, rows, bad_rows=bad, seed=42)
        schema.install(settings)
        with conn:
            predicted = accounting.forecast(conn, settings, org_cached=False).credits
        run_id = sync.start_initial_run(settings)
        drive(conn, settings, client, Outcome(None, Step.EXTRACT, run_id=run_id))
        progress = sync.run_progress(settings, run_id)
        assert progress["state"] == "done", progress
        spent = int(sim.admin.credits()["used_24h"])
        took = synced(conn)
        case = {
            "rows": rows, "bad": bad, "written": took, "predicted": predicted, "spent": spent,
            "minimum": floor(took, org_call=True), "run_credits": progress["credits_spent"],
            "naive_upsert": planner.all_upsert(rows).credits,
            "naive_article": planner.bulk_above_threshold(rows).credits,
        }  # fmt: skip
        if args.churn and rows >= args.churn:
            case["churn"] = churn(conn, settings, client, sim, args.churn, spent)
        return case
    finally:
        client.close()
        conn.close()
        drop_database(name)
        delete_keys(prefix)


def churn(
    conn: Any, settings: Settings, client: ZohoClient, sim: SimProcess, edits: int, before: int
) -> dict[str, Any]:
    """Edit ``edits`` synced rows (every tenth made bad), then one interval run."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE orders SET quantity = quantity + 1,"
            " customer_email = CASE WHEN id %% 10 = 0 THEN 'broken@@example' ELSE customer_email"
            " END WHERE id IN (SELECT id FROM orders WHERE synced ORDER BY id LIMIT %s)",
            (edits,),
        )
        cur.execute("SELECT count(*) FROM orders WHERE synced")
        synced_before = int(cur.fetchone()[0])
    result = interval.run_interval(settings, client, conn=conn)
    for batch_id in result.bulk_batches:
        drive(conn, settings, client, Outcome(batch_id, Step.RENDER, run_id=result.run_id))
    spent = int(sim.admin.credits()["used_24h"]) - before
    took = synced(conn) - synced_before
    return {
        "edits": edits, "written": took, "planned": result.credits_planned, "spent": spent,
        # the floor for the rows Zoho took, plus the field check any run makes once its cached
        # metadata is an hour old (1 credit; the plan says so)
        "minimum": floor(took, org_call=False) + result.check_credits,
        "check_credits": result.check_credits,
        "naive_upsert": planner.all_upsert(edits).credits,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,6000,30000", help="volumes, comma-separated")
    parser.add_argument("--bad", default="0,2,10,50", help="bad-row shares in %%")
    parser.add_argument("--batch-size", type=int, default=25_000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument("--churn", type=int, default=6_000, help="rows edited afterwards")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    volumes = [int(v) for v in args.rows.split(",")]
    shares = [float(v) for v in args.bad.split(",")]
    cases = []
    with SimProcess() as sim, tempfile.TemporaryDirectory() as tmp:
        for rows in volumes:
            for share in shares:
                started = time.perf_counter()
                case = one_case(sim, rows, round(rows * share / 100), args, Path(tmp))
                case["seconds"] = round(time.perf_counter() - started, 1)
                cases.append(case)
                if not args.json:
                    print(line(case), flush=True)
    ok = all(c["spent"] == c["minimum"] == c["predicted"] for c in cases) and all(
        c["churn"]["spent"] == c["churn"]["minimum"] == c["churn"]["planned"]
        for c in cases
        if "churn" in c
    )
    if args.json:
        print(json.dumps({"cases": cases, "spent_is_minimum_and_predicted": ok}))
    else:
        print("spent = minimum = predicted in every case" if ok else "MISMATCH: see above")
    return 0 if ok else 1


def line(c: dict[str, Any]) -> str:
    text = (
        f"{c['rows']:>7,} rows, {c['bad']:>6,} bad → {c['written']:>7,} written:"
        f" spent {c['spent']:>6,}  minimum {c['minimum']:>6,}  predicted {c['predicted']:>6,}"
        f"  | naive upsert {c['naive_upsert']:>6,}, article {c['naive_article']:>6,}"
        f"  ({c['seconds']} s)"
    )
    if "churn" in c:
        k = c["churn"]
        text += (
            f"\n         churn {k['edits']:,} edits → {k['written']:,} written: spent"
            f" {k['spent']:,}  minimum {k['minimum']:,} (field check {k['check_credits']})"
            f"  planned {k['planned']:,}"
            f"  | naive upsert {k['naive_upsert']:,}"
        )
    return text


if __name__ == "__main__":
    raise SystemExit(main())
