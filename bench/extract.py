"""Benchmark: extract + render pending rows to zipped CSV batches, against the floor.

For ``--rows`` seeded demo orders (default 1,000,000) in a fresh database:

* ours: ``pipeline.legacy.render.extract_batch`` until nothing is pending — claim (keys and
  versions recorded), COPY of the serialiser's expressions, zip (deflate 1) on disk, sha256,
  ledger row; as in the pipeline, at most ``--in-flight`` batches stay unfinished;
* the floor, same run: ``COPY (SELECT <same expressions> … keyset batch) TO STDOUT CSV`` plus
  zip of the same rows to disk, nothing else; and the raw floor (plain columns, no formatting);
  each floor runs before and after ours and the faster run counts;
* marking: ``mark_synced`` of one whole batch (version-checked, one statement), several times;
* peak RSS (ru_maxrss) of this process, and of a child run on ``--rss-rows`` (100k) rows: a
  streaming extractor has the same peak for both;
* ``--side-table``: where the sync state lives — marking a batch and the extraction join when
  ``synced``/``sync_version``/``zoho_id`` live in a narrow side table instead of the legacy one.

``--json`` prints every figure as one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import demo, ledger  # noqa: E402
from pipeline.arrays import int_array, text_array  # noqa: E402
from pipeline.legacy import render, schema  # noqa: E402
from pipeline.legacy.connection import connect  # noqa: E402
from pipeline.legacy.mark import mark_synced  # noqa: E402
from pipeline.secret import Secret  # noqa: E402
from pipeline.serialize import select_list, session_timezone_sql  # noqa: E402
from pipeline.settings import Settings, SourceSettings  # noqa: E402
from tests.fixtures.services import PG_SERVER, create_database, drop_database  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_run(settings: Settings, rows: int, batch: int, work: Path, raw: bool) -> float:
    """COPY keyset batches of the same rows + zip to disk; returns seconds."""
    conn = connect(settings)
    columns = (
        sql.SQL(", ").join(sql.Identifier(c) for c in settings.mapping.columns)
        if raw
        else select_list(settings.mapping)
    )
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.execute(session_timezone_sql(settings.org_timezone))
    for number, lo in enumerate(range(1, rows + 1, batch)):
        with conn, conn.cursor() as cur:
            cur.execute(session_timezone_sql(settings.org_timezone))
            buffer = io.BytesIO()
            cur.copy_expert(
                sql.SQL(
                    "COPY (SELECT {} FROM orders WHERE id BETWEEN {} AND {} ORDER BY id)"
                    " TO STDOUT WITH (FORMAT csv)"
                )
                .format(columns, sql.Literal(lo), sql.Literal(lo + batch - 1))
                .as_string(conn),
                buffer,
            )
        path = work / f"floor-{number}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("batch.csv", buffer.getvalue())
        path.unlink()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def ours_run(settings: Settings, rows: int, in_flight: int) -> tuple[float, int, list[int]]:
    """extract_batch until every row went out once; returns seconds, rows, batch ids.

    Finished batches are not marked here (that is timed apart), so their rows are free again:
    the run stops when all ``rows`` were extracted once.
    """
    conn = connect(settings)
    ids: list[int] = []
    total = 0
    started = time.perf_counter()
    while total < rows and (batch := render.extract_batch(conn, settings)) is not None:
        ids.append(batch.batch_id)
        total += batch.row_count
        batch.path.unlink()  # keep the disk small; the zip was complete
        if len(ids) > in_flight:  # as the pipeline does: the oldest batch got reconciled
            with conn:
                ledger.finish_batch(conn, settings, ids[-in_flight - 1])
    seconds = time.perf_counter() - started
    conn.close()
    return seconds, total, ids


def mark_run(settings: Settings, batch_ids: list[int]) -> list[float]:
    """Time mark_synced of whole batches (one statement each, committed)."""
    conn = connect(settings)
    timings = []
    for batch_id in batch_ids:
        with conn:
            outcomes = [
                (k, f"40000000{k}") for k, _ in ledger.batch_claims(conn, settings, batch_id)
            ]
        started = time.perf_counter()
        with conn:
            result = mark_synced(conn, settings, batch_id, outcomes)
        timings.append(time.perf_counter() - started)
        assert result.marked == len(outcomes), result
    conn.close()
    return timings


def side_table_run(settings: Settings, rows: int, batch: int) -> dict[str, float]:
    """The alternative: sync state in a narrow side table. Mark and extraction-join costs."""
    conn = connect(settings)
    out: dict[str, float] = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE orders_sync (id bigint PRIMARY KEY,"
            " synced boolean NOT NULL DEFAULT false,"
            " sync_version bigint NOT NULL DEFAULT 1, zoho_id text)"
        )
        cur.execute("INSERT INTO orders_sync (id) SELECT id FROM orders")
        cur.execute("CREATE INDEX orders_sync_pending ON orders_sync (id) WHERE NOT synced")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE orders_sync")
    conn.autocommit = False
    copy_lo = 1 + (rows // 10) * 8
    # The same raw statement on both tables: UPDATE … FROM unnest(keys, versions, zoho ids).
    mark = (
        "UPDATE {} s SET synced = true, zoho_id = u.z"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS u(id, v, z)"
        " WHERE s.id = u.id AND s.sync_version = u.v"
    )
    for label, table, tenths in (
        ("side_mark_25k_s", "orders_sync", (2, 4, 6)),
        ("legacy_mark_25k_s", "orders", (3, 5, 7)),
    ):
        marks = []
        for tenth in tenths:
            lo = 1 + rows // 10 * tenth
            keys = list(range(lo, lo + batch))
            started = time.perf_counter()
            with conn, conn.cursor() as cur:
                cur.execute(mark.format(table), (int_array(keys), int_array([1] * len(keys)),
                                                 text_array([f"4000{k}" for k in keys])))
                assert cur.rowcount == len(keys), (cur.rowcount, len(keys))
            marks.append(time.perf_counter() - started)
        out[label] = statistics.median(marks)
    exprs = select_list(settings.mapping, "t")
    for label, query in (
        (
            "legacy_copy_25k_s",
            sql.SQL("SELECT {} FROM orders t WHERE t.id BETWEEN {} AND {} ORDER BY t.id").format(
                exprs, sql.Literal(copy_lo), sql.Literal(copy_lo + batch - 1)
            ),
        ),
        (
            "side_join_copy_25k_s",
            sql.SQL(
                "SELECT {} FROM orders_sync s JOIN orders t ON t.id = s.id"
                " WHERE NOT s.synced AND s.id BETWEEN {} AND {} ORDER BY s.id"
            ).format(exprs, sql.Literal(copy_lo), sql.Literal(copy_lo + batch - 1)),
        ),
    ):
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            with conn, conn.cursor() as cur:
                cur.copy_expert(
                    sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query).as_string(conn),
                    io.BytesIO(),
                )
            timings.append(time.perf_counter() - started)
        out[label] = statistics.median(timings)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE orders_sync")
    conn.close()
    return out


def child_rss(rows: int) -> float | None:
    """Peak RSS of the same benchmark on fewer rows, in a child process."""
    done = subprocess.run(
        [sys.executable, __file__, "--rows", str(rows), "--json", "--no-child", "--marks", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return float(json.loads(done.stdout)["peak_rss_mb"])


def report(f: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures as text, each beside its floor and target."""
    lines = [
        f"rows {args.rows:,} in batches of {args.batch:,} (org time zone {args.timezone})",
        f"  floor  COPY (serialiser SELECT) + zip     {f['floor_s']:7.2f} s"
        f"  {f['floor_rows_per_s']:>9,} rows/s",
        f"  floor  COPY (raw columns) + zip           {f['raw_floor_s']:7.2f} s",
        f"  ours   claim + COPY + zip + sha + ledger  {f['ours_s']:7.2f} s"
        f"  {f['ours_rows_per_s']:>9,} rows/s",
        f"  ratio  ours / floor {f['ratio_to_floor']:.2f} (target <= 1.5);"
        f" ours / raw floor {f['ratio_to_raw_floor']:.2f}",
        f"  mark   {args.batch:,} rows, one version-checked statement:"
        f" median {f['mark_s_median']:.3f} s, max {f['mark_s_max']:.3f} s (target < 1 s)",
    ]
    rss = f"  peak RSS {f['peak_rss_mb']:.1f} MB at {args.rows:,} rows"
    if f.get("peak_rss_mb_at_rss_rows") is not None:
        rss += f", {f['peak_rss_mb_at_rss_rows']:.1f} MB at {args.rss_rows:,} rows"
    lines.append(rss + " (target < 200 MB, and the same for both)")
    if "side_table" in f:
        side = f["side_table"]
        lines.append(
            f"  where sync state lives, {args.batch:,} rows: mark legacy table"
            f" {side['legacy_mark_25k_s']:.3f} s vs side table {side['side_mark_25k_s']:.3f} s;"
            f" COPY legacy table {side['legacy_copy_25k_s']:.3f} s"
            f" vs joined with side table {side['side_join_copy_25k_s']:.3f} s"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=25_000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument("--marks", type=int, default=3, help="batches to mark (timed)")
    parser.add_argument("--rss-rows", type=int, default=100_000, help="rows of the child RSS run")
    parser.add_argument("--no-child", action="store_true", help="skip the child RSS run")
    parser.add_argument("--side-table", action="store_true", help="also measure a side table")
    parser.add_argument("--timezone", default="Asia/Kolkata")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    name = create_database("ordersync_xbench")
    figures: dict[str, Any] = {"rows": args.rows, "batch": args.batch}
    try:
        with tempfile.TemporaryDirectory(prefix="ordersync-bench-") as tmp:
            work = Path(tmp)
            settings = Settings(
                source=SourceSettings(dsn=Secret(f"{PG_SERVER}/{name}")),
                batch_size=args.batch,
                work_dir=work,
                org_timezone=args.timezone,
            )
            conn = connect(settings)
            seeded = demo.seed(conn, settings, args.rows, bad_rows=0)
            conn.close()
            started = time.perf_counter()
            schema.install(settings)
            figures["install_s"] = round(time.perf_counter() - started, 3)
            admin_conn = connect(settings, autocommit=True)
            with admin_conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE) orders")  # hint bits set for everyone alike
            admin_conn.close()
            figures["seed_s"] = round(seeded.seconds, 2)
            rss_before = peak_rss_mb()

            # Each floor runs before and after ours; the faster run counts (the harder target).
            raw_floors = [floor_run(settings, args.rows, args.batch, work, raw=True)]
            floors = [floor_run(settings, args.rows, args.batch, work, raw=False)]
            ours, extracted, batch_ids = ours_run(settings, args.rows, args.in_flight)
            floors.append(floor_run(settings, args.rows, args.batch, work, raw=False))
            raw_floors.append(floor_run(settings, args.rows, args.batch, work, raw=True))
            floor, raw_floor = min(floors), min(raw_floors)
            assert extracted == args.rows, (extracted, args.rows)
            marks = mark_run(settings, batch_ids[-args.marks :])
            figures.update(
                floor_s=round(floor, 3),
                floor_rows_per_s=round(args.rows / floor),
                raw_floor_s=round(raw_floor, 3),
                ours_s=round(ours, 3),
                ours_rows_per_s=round(args.rows / ours),
                batches=len(batch_ids),
                ratio_to_floor=round(ours / floor, 2),
                ratio_to_raw_floor=round(ours / raw_floor, 2),
                mark_batch_rows=args.batch,
                mark_s_median=round(statistics.median(marks), 3),
                mark_s_max=round(max(marks), 3),
                peak_rss_mb=round(peak_rss_mb(), 1),
                rss_after_seed_mb=round(rss_before, 1),
            )
            if args.side_table:
                figures["side_table"] = {
                    k: round(v, 3)
                    for k, v in side_table_run(settings, args.rows, args.batch).items()
                }
    finally:
        drop_database(name)
    if not args.no_child and args.rss_rows < args.rows:
        figures["rss_rows"] = args.rss_rows
        figures["peak_rss_mb_at_rss_rows"] = child_rss(args.rss_rows)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(report(figures, args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
