"""Eight processes sharing one Zoho client configuration (Redis + PostgreSQL) against zohosim."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
import redis

from pipeline.zoho.client import ZohoClient
from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.credits import CreditLedger

from .conftest import REDIS_URL, sim_settings

PROCESSES = 8


def _worker(
    settings: ZohoSettings,
    dsn: str,
    schema: str,
    start: Any,
    out: Any,
    worker: int,
    calls: int,
) -> None:
    """Runs in a forked child: its own client, Redis connection and ledger connection."""
    ledger = CreditLedger(dsn, schema)
    client = ZohoClient(settings, redis=redis.Redis.from_url(REDIS_URL), credits=ledger)
    start.wait(30)
    ok = 0
    try:
        for i in range(calls):
            size = 20 if i % 2 else 5  # alternate heavy (sub-concurrency) and light upserts
            records = [{"parent_id": f"w{worker}-{i}-{j}", "Name": "n"} for j in range(size)]
            ok += sum(o.ok for o in client.upsert(records))
    finally:
        out.put(ok)
        ledger.close()


def _run(settings: ZohoSettings, dsn: str, schema: str, calls: int) -> int:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(settings, dsn, schema, start, out, w, calls))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    start.set()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return total


def test_eight_processes_never_exceed_the_concurrency(
    zohosim: Any, prefix: str, client_db: str, ledger_schema: str
) -> None:
    zohosim.admin.configure(latency_ms=30)
    settings = sim_settings(zohosim, prefix, concurrency=3, sub_concurrency=2)
    calls = 6
    assert _run(settings, client_db, ledger_schema, calls) == PROCESSES * (calls // 2) * 25
    log = zohosim.admin.requests()
    upserts = [r for r in log["requests"] if r["api"] == "upsert"]
    assert len(upserts) == PROCESSES * calls and {r["status"] for r in upserts} == {200}
    assert log["max_concurrent"] == 3  # reached the cap under pressure, never above it
    assert log["max_concurrent_sub"] == 2
    spent = CreditLedger(client_db, ledger_schema).spent_24h()
    assert spent == zohosim.admin.credits()["used_24h"]


@pytest.mark.parametrize("how", ["invalidated", "expired"])
def test_token_refreshed_once_under_eight_processes(
    zohosim: Any, prefix: str, client_db: str, ledger_schema: str, how: str
) -> None:
    zohosim.admin.configure(latency_ms=20, token_ttl=4 if how == "expired" else 3600)
    settings = sim_settings(zohosim, prefix, concurrency=8, sub_concurrency=8)
    warm = ZohoClient(
        settings,
        redis=redis.Redis.from_url(REDIS_URL),
        credits=CreditLedger(client_db, ledger_schema),
    )
    warm.org_zgid()
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 1
    if how == "invalidated":
        zohosim.admin.invalidate_tokens()
    else:
        time.sleep(max(0.0, warm.tokens.cached().refresh_at - time.time()) + 0.1)
    assert _run(settings, client_db, ledger_schema, 2) == PROCESSES * 25
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 2  # one refresh for all eight
    statuses = [r["status"] for r in zohosim.admin.requests()["requests"] if r["api"] == "upsert"]
    assert statuses.count(401) <= (PROCESSES if how == "invalidated" else 0)
