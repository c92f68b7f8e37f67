"""What the NOTIFY in the change trigger (``sync.notify``) costs the legacy application's writes.

On ``--rows`` seeded demo orders (default 200,000) in a fresh database, the same writes with the
plain change trigger and with the notifying one (``ordersync db install`` with ``notify`` off,
then on; a listener connected and draining, as ``ordersync listen`` would be):

* one statement updating a mapped column of every row (one transaction: the notifications fold
  into one, but ``pg_notify`` runs for each row), VACUUM before each;
* ``--writers`` connections committing single-row mapped updates as fast as they can for
  ``--seconds`` (each commit takes PostgreSQL's notify-queue lock with the trigger on):
  transactions per second, all writers together.

``--repeat`` rounds alternate the two triggers; the best of each is printed (all in --json).

    .venv/bin/python bench/notify_trigger.py [--rows 200000] [--writers 4] [--seconds 10]
                                             [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import select
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import demo  # noqa: E402
from pipeline.legacy import schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.legacy.names import Names  # noqa: E402
from pipeline.secret import Secret  # noqa: E402
from pipeline.settings import Settings, SourceSettings  # noqa: E402
from tests.fixtures.services import PG_SERVER, create_database, drop_database  # noqa: E402

STATUSES = ("Paid", "Shipped", "Delivered")


def _vacuum(settings: Settings) -> None:
    conn = connect(settings, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM orders")
    finally:
        conn.close()


def _bulk_update(settings: Settings, repeat: int) -> float:
    """Seconds of the best of ``repeat`` whole-table mapped updates (one transaction each)."""
    best = float("inf")
    for i in range(repeat):
        _vacuum(settings)
        conn = connect(settings)
        try:
            started = time.perf_counter()
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE orders SET status = %s", (STATUSES[i % len(STATUSES)],))
            best = min(best, time.perf_counter() - started)
        finally:
            conn.close()
    return best


def _writers(settings: Settings, writers: int, seconds: float, rows: int) -> float:
    """Single-row mapped-update transactions per second, ``writers`` connections together."""
    _vacuum(settings)
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    deadline: list[float] = []

    def write(n: int) -> None:
        rng = random.Random(n)
        conn = connect(settings, application="bench-writer")
        try:
            start.wait()
            with conn.cursor() as cur:
                while time.monotonic() < deadline[0]:
                    cur.execute("UPDATE orders SET status = %s WHERE id = %s",
                                (rng.choice(STATUSES), rng.randint(1, rows)))  # fmt: skip
                    conn.commit()
                    counts[n] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    deadline.append(time.monotonic() + seconds)
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def _measure(settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    """One round of both writes with ``settings``' trigger installed (a listener draining)."""
    schema.install(settings)
    stop = threading.Event()
    listener = threading.Thread(target=_drain, args=(settings, stop))
    listener.start()
    try:
        return {
            "bulk_update_s": _bulk_update(settings, 1),
            "writers_tx_per_s": _writers(settings, args.writers, args.seconds, args.rows),
        }
    finally:
        stop.set()
        listener.join()


def _drain(settings: Settings, stop: threading.Event) -> None:
    """A listener on the channel, reading what arrives (as ``ordersync listen`` does)."""
    conn = connect(settings, autocommit=True, application="bench-listen")
    try:
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{Names(settings).notify_channel}"')
        while not stop.is_set():
            if select.select([conn], [], [], 0.2)[0]:
                conn.poll()
                conn.notifies.clear()
    finally:
        conn.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = create_database("ordersync_bench_notify")
    try:
        plain = Settings(source=SourceSettings(dsn=Secret(f"{PG_SERVER}/{db}")))
        conn = connect(plain)
        try:
            demo.seed(conn, plain, args.rows, seed=3)
        finally:
            conn.close()
        out: dict[str, Any] = {"rows": args.rows, "writers": args.writers,
                               "seconds": args.seconds, "repeat": args.repeat}  # fmt: skip
        # rounds alternate the two triggers, so table growth and a busy box weigh on both alike
        rounds: dict[str, list[dict[str, float]]] = {"plain": [], "notify": []}
        for _ in range(args.repeat):
            rounds["plain"].append(_measure(plain, args))
            rounds["notify"].append(_measure(replace(plain, notify=True), args))
        for name, measured in rounds.items():
            out[name] = {
                "bulk_update_s": round(min(m["bulk_update_s"] for m in measured), 3),
                "writers_tx_per_s": round(max(m["writers_tx_per_s"] for m in measured)),
                "bulk_update_median_s": round(
                    statistics.median(m["bulk_update_s"] for m in measured), 3
                ),
                "writers_median_tx_per_s": round(
                    statistics.median(m["writers_tx_per_s"] for m in measured)
                ),
                "rounds": [{k: round(v, 3) for k, v in m.items()} for m in measured],
            }
        out["bulk_update_ratio"] = round(
            out["notify"]["bulk_update_s"] / out["plain"]["bulk_update_s"], 2
        )
        out["writers_ratio"] = round(
            out["notify"]["writers_tx_per_s"] / out["plain"]["writers_tx_per_s"], 2
        )
        return out
    finally:
        drop_database(db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    p, n = out["plain"], out["notify"]
    print(f"{out['rows']:,} rows; {out['writers']} writers for {out['seconds']:.0f} s")
    print(f"{'trigger':<10} {'UPDATE all rows, s':>19} {'single-row tx/s':>16}")
    print(f"{'plain':<10} {p['bulk_update_s']:>19} {p['writers_tx_per_s']:>16,}")
    print(f"{'notify':<10} {n['bulk_update_s']:>19} {n['writers_tx_per_s']:>16,}")
    print(f"notify/plain (best): UPDATE x{out['bulk_update_ratio']}, tx/s x{out['writers_ratio']}")
    print(
        f"medians of {out['repeat']} rounds: UPDATE {p['bulk_update_median_s']} vs"
        f" {n['bulk_update_median_s']} s, tx/s {p['writers_median_tx_per_s']:,} vs"
        f" {n['writers_median_tx_per_s']:,}"
    )


if __name__ == "__main__":
    main()
