"""Upsert throughput of the Zoho client against zohosim, with 1, 4 and 8 processes.

Each process sends ``--calls`` upserts of ``--records`` records through a full ``ZohoClient``
(shared Redis token, Redis governor, PostgreSQL credit ledger). The naive baseline, measured in
the same run, posts the same bodies with a bare ``requests.Session`` and a fixed token (no
governor, no ledger, no retries): the difference is what the client's safety costs. The ceiling
is what the concurrency cap and the simulated latency allow: ``min(processes, cap) / latency``.

    .venv/bin/python bench/client.py [--latency-ms 20] [--calls 40] [--records 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests

# The repository first: bench/zohosim.py must not shadow the zohosim package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.zoho.client import ZohoClient  # noqa: E402
from pipeline.zoho.config import ZohoSettings  # noqa: E402
from pipeline.zoho.credits import CreditLedger, ensure_schema  # noqa: E402
from tests.fixtures.services import (  # noqa: E402
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
)
from tests.fixtures.sim_settings import sim_zoho  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402


def _records(worker: int, call: int, n: int) -> list[dict[str, Any]]:
    return [{"parent_id": f"b{worker}-{call}-{j}", "Name": f"SO-{j}"} for j in range(n)]


def _client_worker(settings: ZohoSettings, dsn: str, start: Any, out: Any, w: int, calls: int,
                   n: int) -> None:  # fmt: skip
    client = ZohoClient(settings, redis=redis.Redis.from_url(REDIS_URL),
                        credits=CreditLedger(dsn, "bench", budget=10**9, reserve=0))  # fmt: skip
    client.tokens.token()
    start.wait(60)
    ok = 0
    for c in range(calls):
        ok += sum(o.ok for o in client.upsert(_records(w, c, n)))
    out.put(ok)


def _naive_worker(url: str, token: str, start: Any, out: Any, w: int, calls: int, n: int) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Zoho-oauthtoken {token}"}
    start.wait(60)
    ok = 0
    for c in range(calls):
        body: dict[str, Any] = {
            "data": _records(w + 1000, c, n), "duplicate_check_fields": ["parent_id"]
        }
        r = session.post(url, json=body, headers=headers, timeout=(5, 60))
        ok += sum(item.get("status") == "success" for item in r.json().get("data", []))
    out.put(ok)


def _measure(target: Any, head: tuple, tail: tuple, procs: int) -> tuple[float, int]:
    """Run ``target(*head, start, out, worker, *tail)`` in ``procs`` forked processes at once."""
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=target, args=(*head, start, out, w, *tail)) for w in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.3)  # let every child build its client
    t0 = time.perf_counter()
    start.set()
    ok = sum(out.get(timeout=600) for _ in ps)
    elapsed = time.perf_counter() - t0
    for p in ps:
        p.join(30)
    return elapsed, ok


def _reset(sim: SimProcess, latency_ms: float) -> None:
    sim.admin.reset()
    sim.admin.configure(latency_ms=latency_ms, concurrency=25, sub_concurrency=10)


def _token(sim: SimProcess) -> str:
    body = {
        "grant_type": "refresh_token", "client_id": sim.client_id,
        "client_secret": sim.client_secret, "refresh_token": sim.refresh_token,
    }  # fmt: skip
    return requests.post(sim.token_url, data=body, timeout=10).json()["access_token"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--calls", type=int, default=40, help="upserts per process")
    ap.add_argument("--records", type=int, default=100, help="records per upsert (1..100)")
    ap.add_argument("--concurrency", type=int, default=10, help="the client's cap")
    ap.add_argument("--processes", default="1,4,8")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = create_database("ordersync_bench")
    dsn = f"{PG_SERVER}/{db}"
    conn = psycopg2.connect(dsn)
    with conn:
        ensure_schema(conn, "bench")
    conn.close()
    results: list[dict[str, Any]] = []
    try:
        with SimProcess() as sim:
            base = sim_zoho(
                sim, "bench:client", concurrency=a.concurrency,
                sub_concurrency=min(10, a.concurrency), daily_credit_budget=10**9,
                credit_reserve=0,
            )  # fmt: skip
            url = f"{sim.base_url}/crm/v8/Orders/upsert"
            for procs in (int(p) for p in a.processes.split(",")):
                _reset(sim, a.latency_ms)
                naive_s, naive_ok = _measure(
                    _naive_worker, (url, _token(sim)), (a.calls, a.records), procs
                )
                _reset(sim, a.latency_ms)
                settings = replace(base, redis_prefix=f"bench:client:{uuid.uuid4().hex}")
                try:
                    client_s, client_ok = _measure(
                        _client_worker, (settings, dsn), (a.calls, a.records), procs
                    )
                finally:
                    delete_keys(settings.redis_prefix)
                log = sim.admin.requests()
                calls = procs * a.calls
                cap = min(procs, a.concurrency, 10 if a.records > 10 else 25)
                results.append({
                    "processes": procs,
                    "concurrency_cap": a.concurrency,
                    "ceiling_calls_per_s": round(cap / (a.latency_ms / 1000), 1)
                    if a.latency_ms else None,
                    "client_calls_per_s": round(calls / client_s, 1),
                    "client_records_per_s": round(client_ok / client_s),
                    "naive_calls_per_s": round(calls / naive_s, 1),
                    "naive_records_per_s": round(naive_ok / naive_s),
                    "max_concurrent_seen": log["max_concurrent"],
                    "records_ok": client_ok,
                })  # fmt: skip
    finally:
        drop_database(db)
    summary = {
        "latency_ms": a.latency_ms, "calls_per_process": a.calls,
        "records_per_call": a.records, "runs": results,
    }  # fmt: skip
    if a.json:
        print(json.dumps(summary))
        return
    print(f"upserts of {a.records} records, {a.calls} calls per process, "
          f"zohosim latency {a.latency_ms:g} ms, client cap {a.concurrency}")  # fmt: skip
    print(f"{'procs':>5} {'cap':>4} {'ceiling c/s':>11} {'client c/s':>10} {'client rec/s':>12} "
          f"{'naive c/s':>9} {'naive rec/s':>11} {'max conc':>8}")  # fmt: skip
    for r in results:
        print(f"{r['processes']:>5} {r['concurrency_cap']:>4} {r['ceiling_calls_per_s']:>11} "
              f"{r['client_calls_per_s']:>10} {r['client_records_per_s']:>12} "
              f"{r['naive_calls_per_s']:>9} {r['naive_records_per_s']:>11} "
              f"{r['max_concurrent_seen']:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
