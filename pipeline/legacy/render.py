"""Rendering: a bulk batch → CSV (header = Zoho API names) → zip on disk, with checksum.

The CSV's columns are the mapping's fields in order (the key's ``parent_id`` among the first
three, so Zoho's result file names it); values come straight from PostgreSQL's ``COPY`` of the
serialiser's expressions (:mod:`pipeline.serialize`), into a deflate level 1 zip entry
(level 6 doubles the time for 15 % less). At most one batch's CSV is in memory (~3 MB for
25,000 rows). The zip is complete and recorded on the batch before the claim commits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.ledger import Batch
from pipeline.legacy.extract import extract_bulk
from pipeline.legacy.names import Names, key_type
from pipeline.mapping import Mapping
from pipeline.serialize import select_list, session_timezone_sql
from pipeline.settings import Settings

ZIP_LEVEL = 1
BUFFER_BYTES = 1 << 20  # read size for checksums


@dataclass(frozen=True)
class RenderedBatch:
    """A batch ready to upload: the zip, its sha256 and how many rows its CSV holds."""

    batch_id: int
    path: Path
    checksum: str
    row_count: int
    zip_bytes: int


def header_line(mapping: Mapping) -> bytes:
    """The CSV header: Zoho API names in mapping order (the unique field among the first three)."""
    if mapping.unique_field not in mapping.api_names[:3]:
        raise ValueError(f"{mapping.unique_field} must be among the first three CSV columns")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(mapping.api_names)
    return out.getvalue().encode("utf-8")


def csv_name(batch_id: int) -> str:
    """The name of the CSV inside batch ``batch_id``'s zip."""
    return f"batch-{batch_id:08d}.csv"


def zip_path(settings: Settings, batch_id: int) -> Path:
    """Where batch ``batch_id``'s zip lives."""
    return Path(settings.work_dir) / f"batch-{batch_id:08d}.zip"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(BUFFER_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_zip(settings: Settings, batch_id: int, body: memoryview) -> tuple[Path, str, int]:
    """Write batch ``batch_id``'s zip (one CSV entry holding ``body``) aside, then rename it
    into place, so it is whole or absent; (path, sha256, size)."""
    work = Path(settings.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    final = zip_path(settings, batch_id)
    partial = final.with_name(f".{final.name}.{os.getpid()}.{id(body)}.part")
    try:
        with (
            zipfile.ZipFile(
                partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL
            ) as archive,
            archive.open(csv_name(batch_id), "w", force_zip64=True) as entry,
        ):
            entry.write(body)
        os.replace(partial, final)
        try:
            return final, sha256_file(final), final.stat().st_size
        except BaseException:
            final.unlink(missing_ok=True)  # a zip without its checksum is no use to anyone
            raise
    finally:
        partial.unlink(missing_ok=True)


def fills_its_range(batch: Batch) -> bool:
    """Are at least half the integer keys of the batch's range its own? (False for other keys.)"""
    try:
        width = int(str(batch.key_hi)) - int(str(batch.key_lo)) + 1
    except (TypeError, ValueError):
        return False
    return width > 0 and 2 * int(batch.row_count or 0) >= width


def render_claimed(conn: Connection, settings: Settings, batch: Batch) -> RenderedBatch:
    """Write a claimed batch's zip from its rows as they stand at their claimed versions.

    A row edited since the claim (its version moved on) is left out: it stays pending and goes
    in a later batch. Runs in its own short transaction (read only). The key range keeps the
    join to an index range scan.
    """
    n = Names(settings)
    sink = io.BytesIO()
    sink.write(header_line(settings.mapping))
    try:
        with conn.cursor() as cur:
            cur.execute(session_timezone_sql(settings.org_timezone))
            # the sort by key of a batch's CSV lines (~3.6 MB for 25,000) fits in memory: with
            # the default 4 MB work_mem it went to disk (an external merge) for every batch
            cur.execute("SET LOCAL work_mem = '64MB'")
            # The planner takes the claimed arrays for ten rows and probes the key index once
            # per row; where the batch fills most of its key range (a first pass: always), a
            # merge join with the range, read in key order, costs ~25 % less CPU and needs no
            # sort. (No JIT: the disabled nested loop's penalty cost would otherwise make the
            # plan look worth compiling.) A sparse batch (a retry round's) keeps the probes.
            if fills_its_range(batch):
                cur.execute("SET LOCAL enable_nestloop = off")
                cur.execute("SET LOCAL jit = off")
            query = sql.SQL(
                """SELECT {exprs} FROM {table} t
                   JOIN (SELECT c.k, c.v FROM {batches} b, unnest(b.keys, b.versions) AS c(k, v)
                         WHERE b.id = {batch}) AS c ON t.{key} = c.k::{kt} AND t.{version} = c.v
                   WHERE t.{key} BETWEEN {lo}::{kt} AND {hi}::{kt}
                   ORDER BY t.{key}"""
            ).format(
                lo=sql.Literal(batch.key_lo),
                hi=sql.Literal(batch.key_hi),
                exprs=select_list(settings.mapping, "t"),
                table=n.table,
                batches=n.ledger_table("batches"),
                batch=sql.Literal(batch.id),
                key=n.key,
                kt=key_type(conn, settings),
                version=n.version,
            )
            cur.copy_expert(
                sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER false)")
                .format(query)
                .as_string(conn),
                sink,
            )
            rows = cur.rowcount
        conn.commit()
        with sink.getbuffer() as body:  # released even if writing fails
            path, checksum, size = write_zip(settings, batch.id, body)
    finally:
        sink.close()
    return RenderedBatch(batch.id, path, checksum, rows, size)


def extract_batch(
    conn: Connection,
    settings: Settings,
    *,
    limit: int | None = None,
    run_id: int | None = None,
) -> RenderedBatch | None:
    """Claim the next bulk batch and write its zip; None when no row is pending and free.

    The batch is recorded ``extracted`` with its zip path, size, sha256 and row count in the
    claiming transaction; if anything fails, nothing is claimed and no zip is left behind.
    """
    done: dict[str, Any] = {}
    # COPY writes once per row: a BytesIO takes those writes at C speed, and the batch's CSV
    # (~3 MB for 25,000 rows) is compressed in one call. Bounded by the batch size.
    sink = io.BytesIO()
    try:

        def open_sink(batch_id: int) -> Any:
            sink.write(header_line(settings.mapping))
            return sink

        def record(cur: Any, batch_id: int, rows: int) -> None:
            with sink.getbuffer() as body:  # released even if writing fails
                path, checksum, size = write_zip(settings, batch_id, body)
            done.update(path=path, checksum=checksum, size=size)
            ledger.record_zip(cur, settings, batch_id, path=str(path), size=size,
                              checksum=checksum)  # fmt: skip

        extracted = extract_bulk(
            conn, settings, open_sink, limit=limit, run_id=run_id, before_commit=record
        )
    except BaseException:
        if "path" in done:  # the claim did not commit: its zip must not stay
            done["path"].unlink(missing_ok=True)
        raise
    finally:
        sink.close()
    if extracted is None:
        return None
    return RenderedBatch(
        extracted.batch_id, done["path"], done["checksum"], extracted.rows, done["size"]
    )
