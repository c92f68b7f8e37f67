"""Near-real-time mode under a steady legacy write load: change→Zoho latency and credits.

The legacy application is ``pipeline.demo.churn`` (single-row inserts, updates of mapped columns
and updates of unmapped columns, each its own transaction) at ``--rate`` writes per second for
``--seconds``, on a table of ``--rows`` orders that start synced (as after the initial load).
Meanwhile the near-real-time check (``pipeline.realtime.flush``, what the beat task
``ordersync.realtime.check`` runs) is invoked every ``--check`` seconds with
``realtime_max_delay`` shortened to ``--max-delay``; after the churn stops, checks go on until
every change has reached zohosim (a real HTTP server; ``--latency-ms`` adds service time).

Measured, from the same run:

* latency of each mapped change: the change's commit time (a bench-only trigger logs every
  version bump with ``clock_timestamp()``) to the reconciliation of the first upsert batch
  that carried that version or a later one (the batch's ``finished_at``: after Zoho answered);
  p50 / p95 / max;
* credits and upsert calls spent (zohosim's own count);
* beside: the naive cost of one upsert per mapped change (1 credit each; per legacy write it
  would be every write, unmapped ones included); our flush rule replayed on the change log
  without coalescing repeated changes to the same order (each change its own record); and
  100-change batches with neither coalescing nor a deadline (⌈changes / 10⌉ credits, the
  floor of any scheme that sends every change as its own record).

With ``--notify on`` the change trigger also NOTIFYs (``sync.notify``) and a
``pipeline.notify.Listener`` in the bench wakes a flush (``woken``: every ready row) between the
periodic checks; ``--notify both`` runs the same load without, then with, and prints both.

    .venv/bin/python bench/realtime.py [--rate 40] [--seconds 60] [--rows 500]
                                       [--max-delay 10] [--check 1] [--latency-ms 0]
                                       [--min-batch 10] [--compare] [--notify off|on|both]
                                       [--debounce 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

# The repository first: bench/zohosim.py must not shadow the zohosim package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import demo, realtime  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.notify import DEBOUNCE, Listener  # noqa: E402
from pipeline.secret import Secret  # noqa: E402
from pipeline.settings import Settings, SourceSettings, SyncMode  # noqa: E402
from pipeline.zoho.client import ZohoClient  # noqa: E402
from pipeline.zoho.limits import UPSERT_MAX_RECORDS, upsert_credits  # noqa: E402
from tests.fixtures.services import (  # noqa: E402
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
)
from tests.fixtures.sim_settings import sim_zoho  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402

# Bench-only: a log of every version bump (mapped change) with its commit-side time.
CHANGE_LOG_SQL = """
CREATE TABLE bench_changes (row_key text, version bigint, at timestamptz);
CREATE FUNCTION bench_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_changes VALUES (NEW.id::text, NEW.sync_version, clock_timestamp());
RETURN NULL; END $$;
CREATE TRIGGER bench_log_change AFTER INSERT OR UPDATE ON orders FOR EACH ROW
WHEN (NOT NEW.synced) EXECUTE FUNCTION bench_log_change();
"""

LATENCY_SQL = """
SELECT c.row_key, extract(epoch FROM c.at - min(c.at) OVER ()), extract(epoch FROM (
    SELECT min(b.finished_at) FROM ordersync.batches b,
           unnest(b.keys, b.versions) AS x(row_key, version)
    WHERE b.kind = 'realtime' AND b.state = 'reconciled'
      AND x.row_key = c.row_key AND x.version >= c.version) - c.at)
FROM bench_changes c ORDER BY c.at
"""


def _settings(db: str, sim: SimProcess, prefix: str, args: argparse.Namespace) -> Settings:
    return Settings(
        source=SourceSettings(dsn=Secret(f"{PG_SERVER}/{db}")),
        zoho=sim_zoho(sim, prefix),
        redis_url=REDIS_URL,
        realtime_max_delay=args.max_delay,
        realtime_check=args.check,
        realtime_min_batch=args.min_batch,
        mode=SyncMode.REALTIME,
        notify=args.notify == "on",
    )


def _prepare(settings: Settings, rows: int) -> None:
    conn = connect(settings)
    try:
        demo.seed(conn, settings, rows, seed=11)
    finally:
        conn.close()
    schema.install(settings)
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE orders SET synced = true")  # as after the initial load
            cur.execute(CHANGE_LOG_SQL)
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _calls_credits(records: int) -> tuple[int, int]:
    """Upsert calls and credits of ``records`` records sent in calls of 100."""
    full, rest = divmod(records, UPSERT_MAX_RECORDS)
    credits = full * upsert_credits(UPSERT_MAX_RECORDS) + (upsert_credits(rest) if rest else 0)
    return full + bool(rest), credits


def _same_rule_without_coalescing(
    times: list[float], threshold: int, max_delay: float, check: float
) -> tuple[int, int]:
    """Calls and credits of our flush rule if every change were its own record (no coalescing).

    Replays the change log (seconds since the first change) through checks every ``check``
    seconds: send 100 while ``threshold`` changes wait, and everything once the oldest would be
    ``max_delay`` old at the next check.
    """
    times = sorted(times)
    calls = credits = 0
    sent = 0
    tick = 0.0
    while sent < len(times):
        tick += check
        waiting = [t for t in times[sent:] if t <= tick]
        while len(waiting) >= threshold:
            take = min(UPSERT_MAX_RECORDS, len(waiting))
            c, k = _calls_credits(take)
            calls, credits, sent = calls + c, credits + k, sent + take
            waiting = waiting[take:]
        if waiting and tick - waiting[0] + check >= max_delay:
            c, k = _calls_credits(len(waiting))
            calls, credits, sent = calls + c, credits + k, sent + len(waiting)
    return calls, credits


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = create_database("ordersync_bench_rt")
    prefix = f"bench:realtime:{uuid.uuid4().hex}"
    try:
        with SimProcess() as sim:
            if args.latency_ms:
                sim.admin.configure(latency_ms=args.latency_ms)
            settings = _settings(db, sim, prefix, args)
            _prepare(settings, args.rows)
            client = ZohoClient.from_settings(settings)
            writes: Counter[str] = Counter()

            def legacy_app() -> None:
                conn = connect(settings, application="bench-legacy-app")
                try:
                    writes.update(
                        demo.churn(conn, settings, rate=args.rate, seconds=args.seconds, seed=5)
                    )
                finally:
                    conn.close()

            wake = threading.Event()
            stop_listener = threading.Event()
            listener = Listener(settings, wake.set, debounce=args.debounce)
            listening = threading.Thread(target=listener.run, args=(stop_listener,))
            if settings.notify:
                listening.start()
                while listener.wakes == 0:  # its first wake: connected and listening
                    time.sleep(0.01)
                wake.clear()
            app = threading.Thread(target=legacy_app)
            started = time.monotonic()
            app.start()
            checks = flushes = woken_flushes = 0
            conn = connect(settings, application="bench-check")
            try:
                drain_deadline = started + args.seconds + args.max_delay + 30
                next_check = time.monotonic()
                woken = False
                while True:
                    result = realtime.flush(settings, client, conn=conn, woken=woken)
                    checks += 1
                    flushes += bool(result.batches)
                    woken_flushes += woken and bool(result.batches)
                    if not app.is_alive():
                        state = realtime.pending_state(conn, settings)
                        if state.free == 0 or time.monotonic() > drain_deadline:
                            break
                    if not woken:
                        next_check += args.check
                    # the next periodic check, or sooner when the listener is woken
                    woken = wake.wait(max(0.0, next_check - time.monotonic()))
                    wake.clear()
                app.join()
                with conn, conn.cursor() as cur:
                    cur.execute(LATENCY_SQL)
                    measured = cur.fetchall()
                    cur.execute("SELECT count(*) FROM orders WHERE NOT synced")
                    left = int(cur.fetchone()[0])
            finally:
                stop_listener.set()
                if listening.is_alive():
                    listening.join()
                conn.close()
                client.close()
            credits = sim.admin.credits()
        elapsed = time.monotonic() - started
    finally:
        drop_database(db)
        delete_keys(prefix)

    latencies = [float(s) for _, _, s in measured if s is not None]
    new_orders = [float(s) for k, _, s in measured if s is not None and int(k) > args.rows]
    old_orders = [float(s) for k, _, s in measured if s is not None and int(k) <= args.rows]
    changes = len(measured)
    orders_changed = len({key for key, _, _ in measured})
    rule_calls, rule_credits = _same_rule_without_coalescing(
        [float(t) for _, t, _ in measured], 100, args.max_delay, args.check
    )
    batch_calls, batch_credits = _calls_credits(changes)
    all_writes = sum(writes.values())
    upsert_calls = int(credits["calls_by_api"].get("upsert", 0))
    spent = int(credits["by_api"].get("upsert", 0))
    return {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "rows": args.rows,
        "max_delay_s": args.max_delay,
        "check_s": args.check,
        "latency_ms": args.latency_ms,
        "writes": dict(writes),
        "writes_total": all_writes,
        "mapped_changes": changes,
        "orders_changed": orders_changed,
        "delivered": len(latencies),
        "left_pending": left,
        "checks": checks,
        "flushes": flushes,
        "notify": settings.notify,
        "woken_flushes": woken_flushes,
        "notifications": listener.notifications,
        "min_batch": args.min_batch,
        "latency_s": _summary(latencies),
        "latency_new_orders_s": _summary(new_orders),
        "latency_existing_orders_s": _summary(old_orders),
        "ours": {"upsert_calls": upsert_calls, "credits": spent},
        "naive_per_change": {"upsert_calls": changes, "credits": changes},
        "naive_per_write": {"upsert_calls": all_writes, "credits": all_writes},
        "same_rule_no_coalescing": {"upsert_calls": rule_calls, "credits": rule_credits},
        "batches_of_100_no_deadline": {"upsert_calls": batch_calls, "credits": batch_credits},
        "elapsed_s": round(elapsed, 1),
    }


def _summary(latencies: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(latencies),
        "p50": round(statistics.median(latencies), 3) if latencies else None,
        "p95": round(_percentile(latencies, 0.95), 3) if latencies else None,
        "max": round(max(latencies), 3) if latencies else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=40.0, help="legacy writes per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the legacy app writes")
    ap.add_argument("--rows", type=int, default=500, help="orders in the table at the start")
    ap.add_argument("--max-delay", type=float, default=10.0, help="realtime_max_delay, seconds")
    ap.add_argument("--check", type=float, default=1.0, help="realtime_check, seconds")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="zohosim service time per call")
    ap.add_argument("--min-batch", type=int, default=10,
                    help="realtime_min_batch: whole tens go at once (100: full batches only)")
    ap.add_argument("--compare", action="store_true",
                    help="also run the older scheme (min_batch 100) on the same load, after")
    ap.add_argument("--notify", choices=("off", "on", "both"), default="off",
                    help="the NOTIFY wake-up (sync.notify); both: without, then with")
    ap.add_argument("--debounce", type=float, default=DEBOUNCE,
                    help="the listener's debounce, seconds (with --notify)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.notify == "both":
        _notify_both(args)
        return
    out = run(args)
    if args.compare:
        older = run(argparse.Namespace(**{**vars(args), "min_batch": 100}))
        out["older_scheme_min_batch_100"] = {
            k: older[k] for k in ("latency_s", "latency_new_orders_s",
                                  "latency_existing_orders_s", "ours", "mapped_changes")
        }
        out["credits_vs_older_scheme"] = round(
            out["ours"]["credits"] / max(1, older["ours"]["credits"]), 3)
    if args.json:
        print(json.dumps(out))
        return
    lat = out["latency_s"]
    print(
        f"legacy app: {out['writes_total']} writes in {out['seconds']:.0f} s"
        f" at {out['rate_per_s']}/s"
        f" ({out['writes']}); {out['mapped_changes']} mapped changes to"
        f" {out['orders_changed']} orders"
    )
    print(
        f"near-real-time: max_delay {out['max_delay_s']} s, check every {out['check_s']} s;"
        f" {out['checks']} checks, {out['flushes']} flushed; delivered {out['delivered']}"
        f"/{out['mapped_changes']} changes, {out['left_pending']} rows left pending"
    )
    print(f"change -> Zoho latency (min_batch {out['min_batch']}): p50 {lat['p50']} s,"
          f" p95 {lat['p95']} s, max {lat['max']} s")
    for label, key in (("new orders", "latency_new_orders_s"),
                       ("existing orders", "latency_existing_orders_s")):
        part = out[key]
        print(f"  {label}: {part['n']} changes, p50 {part['p50']} s, p95 {part['p95']} s,"
              f" max {part['max']} s")
    if "older_scheme_min_batch_100" in out:
        older = out["older_scheme_min_batch_100"]
        o = older["latency_s"]
        print(f"older scheme (full batches only, same load): p50 {o['p50']} s, p95 {o['p95']} s,"
              f" max {o['max']} s; {older['ours']['upsert_calls']} calls,"
              f" {older['ours']['credits']} credits (ours/older: {out['credits_vs_older_scheme']})")
    rows = [
        ("ours (coalesced, whole tens at once, max_delay)", out["ours"]),
        ("same flush rule, no coalescing", out["same_rule_no_coalescing"]),
        ("100-change batches, no coalescing/deadline", out["batches_of_100_no_deadline"]),
        ("naive: one upsert per mapped change", out["naive_per_change"]),
        ("naive: one upsert per legacy write", out["naive_per_write"]),
    ]
    print(f"{'strategy':<44} {'calls':>7} {'credits':>8}")
    for name, cost in rows:
        print(f"{name:<44} {cost['upsert_calls']:>7} {cost['credits']:>8}")


def _notify_both(args: argparse.Namespace) -> None:
    """The same load without, then with, the NOTIFY wake-up: latency and credits side by side."""
    keys = ("latency_s", "latency_new_orders_s", "latency_existing_orders_s", "ours",
            "mapped_changes", "checks", "flushes", "woken_flushes", "notifications")
    out = {
        "settings": {k: getattr(args, k) for k in ("rate", "seconds", "rows", "max_delay",
                                                     "check", "min_batch", "debounce")},
        **{mode: {k: v for k, v in run(argparse.Namespace(**{**vars(args), "notify": mode}))
                  .items() if k in keys} for mode in ("off", "on")},
    }  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.rate}/s legacy writes for {args.seconds:.0f} s, check every {args.check} s,"
          f" max_delay {args.max_delay} s, debounce {args.debounce} s")
    print(f"{'notify':<7} {'changes':>8} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'calls':>6}"
          f" {'credits':>8} {'woken':>6}")
    for mode in ("off", "on"):
        r = out[mode]
        lat = r["latency_s"]
        print(f"{mode:<7} {r['mapped_changes']:>8} {lat['p50']:>7} {lat['p95']:>7} {lat['max']:>7}"
              f" {r['ours']['upsert_calls']:>6} {r['ours']['credits']:>8}"
              f" {r['woken_flushes']:>6}")


if __name__ == "__main__":
    main()
