"""``ordersync verify`` on a table of ``--rows`` orders synced to zohosim: time and credits.

Seeds the demo table, sends every row to a real zohosim through the normal near-real-time sync,
then measures in the same run:

* **verify** (``pipeline.verify.run_to_end``): Bulk Read export, download, comparison, seconds
  and credits (zohosim's own count), and that it finds nothing on a faithful sync;
* **floor**: reading the legacy table through the serialiser alone (``legacy_rows``), the part
  of a verification no Zoho API can remove;
* **naive read-back**: every record by ``GET /crm/v8/Orders`` 200 at a time (the client's
  ``iter_records``; 1 credit a page), what a tool without Bulk Read would pay;
* the estimate for 1M rows (5 read jobs, 251 credits) beside 5,000 GET pages (5,000 credits).

    .venv/bin/python bench/verify.py [--rows 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import demo, realtime, verify  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.secret import Secret  # noqa: E402
from pipeline.settings import Settings, SourceSettings, SyncMode  # noqa: E402
from pipeline.zoho.client import ZohoClient  # noqa: E402
from tests.fixtures.services import (  # noqa: E402
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
)
from tests.fixtures.sim_settings import sim_zoho  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402


def _prepare(settings: Settings, rows: int, client: ZohoClient) -> None:
    conn = connect(settings)
    try:
        demo.seed(conn, settings, rows, seed=7)
    finally:
        conn.close()
    schema.install(settings)
    later = datetime.now(UTC) + timedelta(hours=1)  # every pending row is due
    for _ in range(rows // (100 * realtime.MAX_BATCHES_PER_FLUSH) + 3):
        if not realtime.flush(settings, client, now=later).batches:
            break


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = create_database("ordersync_bench_verify")
    prefix = f"bench:verify:{uuid.uuid4().hex}"
    try:
        with SimProcess() as sim:
            settings = Settings(
                source=SourceSettings(dsn=Secret(f"{PG_SERVER}/{db}")),
                zoho=sim_zoho(sim, prefix, daily_credit_budget=5_000_000, credit_reserve=1000),
                redis_url=REDIS_URL, mode=SyncMode.REALTIME,
                work_dir=Path(f"/tmp/ordersync-bench-verify-{uuid.uuid4().hex}"),
            )
            client = ZohoClient.from_settings(settings)
            try:
                _prepare(settings, args.rows, client)
                conn = connect(settings)
                try:
                    started = time.perf_counter()
                    legacy = verify.legacy_rows(conn, settings)
                    floor_s = time.perf_counter() - started
                    pending = sum(1 for s, _ in legacy.values() if not s)
                    before = sim.admin.credits()["used_24h"]
                    started = time.perf_counter()
                    v = verify.run_to_end(conn, settings, client, poll=0.05, timeout=600)
                    verify_s = time.perf_counter() - started
                    verify_credits = sim.admin.credits()["used_24h"] - before
                finally:
                    conn.close()
                before = sim.admin.credits()["used_24h"]
                started = time.perf_counter()
                naive_records = sum(1 for _ in client.iter_records(
                    fields=list(settings.mapping.api_names)))
                naive_s = time.perf_counter() - started
                naive_credits = sim.admin.credits()["used_24h"] - before
            finally:
                client.close()
    finally:
        drop_database(db)
        delete_keys(prefix)
    report = v.report or {}
    return {
        "rows": args.rows,
        "pending_after_sync": pending,
        "verify": {"seconds": round(verify_s, 3), "credits": verify_credits,
                   "estimate": v.credits_estimate, "zoho_records": report.get("zoho_records"),
                   "counts": report.get("counts")},
        "floor_legacy_read": {"seconds": round(floor_s, 3)},
        "naive_get_200": {"seconds": round(naive_s, 3), "credits": naive_credits,
                          "records": naive_records},
        "at_1m_rows": {"verify_credits": verify.estimate_credits(1_000_000),
                       "naive_credits": 1_000_000 // 200},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="orders in the table")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    v, f, n = out["verify"], out["floor_legacy_read"], out["naive_get_200"]
    print(f"{out['rows']:,} orders synced to zohosim ({out['pending_after_sync']} left pending)")
    print(f"  verify (Bulk Read)     {v['seconds']:>8.2f} s  {v['credits']:>6} credits"
          f" (estimate {v['estimate']}), {v['zoho_records']:,} records, found {v['counts']}")
    print(f"  floor: legacy read     {f['seconds']:>8.2f} s")
    print(f"  naive GET 200/page     {n['seconds']:>8.2f} s  {n['credits']:>6} credits"
          f" ({n['records']:,} records)")
    a = out["at_1m_rows"]
    print(f"  at 1M rows: verify {a['verify_credits']} credits, naive {a['naive_credits']}")


if __name__ == "__main__":
    main()
