"""The credit ledger (real PostgreSQL) and the governor (real Redis), without a Zoho server."""

from __future__ import annotations

import multiprocessing as mp
import time

import psycopg2
import pytest
import redis

from pipeline.zoho.credits import CreditLedger, ensure_schema
from pipeline.zoho.errors import CreditBudgetExceeded, SlotWaitTimeout
from pipeline.zoho.governor import Governor

from .conftest import REDIS_URL


def test_ensure_schema_is_idempotent(client_db: str, ledger_schema: str) -> None:
    conn = psycopg2.connect(client_db)
    try:
        for _ in range(2):
            with conn:
                ensure_schema(conn, ledger_schema)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'credit_ledger'",
                (ledger_schema,),
            )
            cols = {r[0] for r in cur.fetchall()}
        assert {"id", "at", "api", "credits", "records", "run_id", "batch_id", "remaining"} <= cols
    finally:
        conn.close()
    with pytest.raises(ValueError):
        CreditLedger(client_db, "bad; drop table x")


def test_reserve_refuses_before_the_budget_breaks(client_db: str, ledger_schema: str) -> None:
    led = CreditLedger(client_db, ledger_schema, budget=1_200, reserve=100)
    try:
        first = led.reserve("bulk_create", 500, batch_id=7)
        led.reserve("bulk_create", 500)
        assert led.spent_24h() == 1_000 and led.remaining() == 100
        with pytest.raises(CreditBudgetExceeded) as info:
            led.reserve("bulk_create", 500)
        err = info.value
        assert "refused before sending bulk_create" in str(err)
        assert err.details["spent_24h"] == 1_000 and err.details["limit"] == 1_100
        assert 86_000 < err.retry_after <= 86_400  # the first 500 age out in ~24 h
        led.reserve("upsert", 10, records=100)  # a smaller call still fits
        led.settle(first, charged=False)  # released: its credits are free again
        assert led.spent_24h() == 510
        led.reserve("bulk_create", 500)
        assert led.spent_24h() == 1_010
    finally:
        led.close()


def test_remaining_header_is_recorded(ledger: CreditLedger) -> None:
    res = ledger.reserve("upsert", 3, records=25)
    assert ledger.zoho_remaining() is None
    ledger.settle(res, charged=True, remaining=4_321)
    assert ledger.zoho_remaining() == 4_321
    assert ledger.spent_24h() == 3


def _reserve_many(dsn: str, schema: str, n: int, out: mp.Queue) -> None:
    led = CreditLedger(dsn, schema, budget=1_000, reserve=0)
    ok = 0
    for _ in range(n):
        try:
            led.reserve("upsert", 10)
            ok += 1
        except CreditBudgetExceeded:
            pass
    led.close()
    out.put(ok)


def test_reservations_are_atomic_across_processes(client_db: str, ledger_schema: str) -> None:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_many, args=(client_db, ledger_schema, 40, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    granted = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    assert granted == 100  # exactly budget / 10, never more, though 160 were asked
    assert CreditLedger(client_db, ledger_schema).spent_24h() == 1_000


# -- governor ------------------------------------------------------------------------------------
def test_governor_caps_and_sub_caps(redis_client: redis.Redis, prefix: str) -> None:
    gov = Governor(redis_client, prefix, concurrency=3, sub_concurrency=2, max_wait=0.2)
    heavy = [gov.acquire(heavy=True), gov.acquire(heavy=True)]
    assert gov.try_acquire(heavy=True) is None  # sub-concurrency full
    light = gov.acquire()  # a light call still fits in the total
    assert gov.in_flight() == (3, 2)
    with pytest.raises(SlotWaitTimeout):
        gov.acquire()
    gov.release(heavy[0])
    assert gov.try_acquire(heavy=True) is not None
    gov.release(light)
    gov.release(heavy[1])


def test_dead_holders_lease_expires(redis_client: redis.Redis, prefix: str) -> None:
    dead = Governor(redis_client, prefix, concurrency=1, sub_concurrency=1, lease_ttl=0.5)
    dead.try_acquire()
    dead._held.clear()  # as if the process died: nobody renews it
    live = Governor(redis_client, prefix, concurrency=1, sub_concurrency=1, max_wait=5)
    assert live.try_acquire() is None
    started = time.monotonic()
    lease = live.acquire()
    assert 0.2 < time.monotonic() - started < 3
    live.release(lease)


def test_held_lease_is_renewed(redis_client: redis.Redis, prefix: str) -> None:
    gov = Governor(redis_client, prefix, concurrency=1, sub_concurrency=1, lease_ttl=1.0)
    with gov.slot():
        time.sleep(2.5)  # well past the TTL: renewal keeps it
        assert gov.try_acquire() is None
    assert gov.try_acquire() is not None


def _hammer(prefix: str, counter: str, peak: str, n: int) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    gov = Governor(r, prefix, concurrency=3, sub_concurrency=3)
    for _ in range(n):
        with gov.slot():
            now = r.incr(counter)
            r.eval(
                "if tonumber(redis.call('GET', KEYS[1]) or 0) < tonumber(ARGV[1]) then "
                "redis.call('SET', KEYS[1], ARGV[1]) end", 1, peak, now
            )  # fmt: skip
            time.sleep(0.003)
            r.decr(counter)


def test_governor_holds_across_processes(redis_client: redis.Redis, prefix: str) -> None:
    counter, peak = f"{prefix}:n", f"{prefix}:peak"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(prefix, counter, peak, 25)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert int(redis_client.get(peak)) == 3  # reached the cap, never above it
