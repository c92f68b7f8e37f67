"""The column-by-column path of a bulk job gives what the row-by-row path gives (pure unit tests).

zohosim converts a chunk of a job's rows column by column before it takes its lock, and writes a
chunk of plain inserts in one pass (``prepare_rows`` / ``RecordStore.insert_columns``). These
tests hold that path to the cell converters and to ``process_row``: the same values, the same
refusals, the same records, indexes, counts and result file, on generated data full of the cells
that differ.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

import zohosim.state as sim_state
from zohosim.bulk import convert_column
from zohosim.records import Records, RecordStore
from zohosim.schema import Field, FieldError, load_schema, set_time_zone
from zohosim.state import State

CELLS: dict[str, list[str]] = {
    "text": ["a", "Abc", " padded ", "x" * 120, "x" * 121, "ünï", "line\nbreak", "a,b"],
    "email": ["ravi.1@example.com", "A@B.CO", "bad@", "no-at.example.com", "x@y.z",
              "o'neil@example.org", "a" * 95 + "@b.co", "a" * 96 + "@b.com"],
    "picklist": ["Paid", "Shipped", "paid", "Unknown", " Paid"],
    "currency": ["825.65", "0.5", ".5", "5.", "-12.345", "+3", "007.10", "1e5", " 12", "12 ",
                 "nan", "inf", "1_000", "9" * 16, "9" * 17, "0" * 5 + "9" * 16, "١٢", "--1", ".",
                 # at the bound of the one-match path (13 digits at 2 places) and past it
                 "9999999999999.99", "-9999999999999.99", "99999999999999.99", "1234567890123.5",
                 "0.125", "2.675", "-0.00", "+.05", "1\x002", "5\x00"],
    "integer": ["3", "007", "-2", "+4", "0", "x", "3.0", " 5", "9" * 9, "9" * 10, "0009" + "9" * 8],
    "bigint": ["123", "0000123", "-5", "9" * 18, "9" * 19, "1.5"],
    "double": ["1.25", "-0.0", "3", "1.", "abc"],
    "date": ["2024-05-01", "2024-02-30", "05/01/2024", "2024-5-1", " 2024-05-01", "2024-13-01"],
    "datetime": ["2023-12-18T15:10:00+00:00", "2023-12-18T15:10:00+05:30",
                 "2023-12-18T15:10:00-00:00", "2023-12-18T15:10:00Z", "2023-12-18T15:10:00",
                 "2023-02-30T15:10:00+00:00", "2023-12-18T25:10:00+00:00",
                 "2023-12-18T15:10:00.250+00:00", "2023-12-18T15:10:00+24:00",
                 " 2023-12-18T15:10:00+00:00", "12/18/2023 15:10:00"],
    "boolean": ["true", "false", "TRUE", "False", " true", "yes", ""],
}


def fields() -> Iterator[Field]:
    yield from load_schema().modules["Orders"].fields.values()
    yield Field("Big", "Big", "bigint", "1", length=18)
    yield Field("Ratio", "Ratio", "double", "2", length=4)
    yield Field("Rate", "Rate", "double", "3", length=16, decimal_place=4)


@pytest.fixture(params=["", "UTC", "Asia/Kolkata"])
def time_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    set_time_zone(request.param)
    yield request.param
    set_time_zone("UTC")


def expected(f: Field, cells: list[str]) -> tuple[list[Any], set[int]]:
    conv = f.csv_converter(None)
    out: list[Any] = []
    refused: set[int] = set()
    for k, c in enumerate(cells):
        if not c:
            out.append(None)
            continue
        try:
            out.append(conv(c))
        except FieldError:
            out.append(None)
            refused.add(k)
    return out, refused


def test_bulk_converters_agree_with_the_cell_converter(time_zone: str) -> None:
    rng = random.Random(13)
    checked = vouched = 0
    for f in fields():
        pool = CELLS.get(f.data_type, CELLS["text"])
        conv, bulk = f.csv_converter(None), f.csv_column(None)
        for c in pool:  # each cell alone: the bulk form vouches only for what converts the same
            got = bulk([c]) if c else None
            if got is not None:
                vouched += 1
                assert got == [conv(c)], (f.api_name, c)
        for _ in range(40):
            cells = [rng.choice(pool + [""]) for _ in range(rng.randint(1, 30))]
            assert convert_column(conv, bulk, cells) == expected(f, cells), (f.api_name, cells)
            checked += 1
    assert checked > 400 and vouched > 20


@pytest.mark.parametrize("places", [0, 1, 2, 4, 9])
def test_a_number_the_one_match_path_vouches_for_is_its_own_rounding(places: int) -> None:
    """Below 10 ** (15 - places), float() of a number of at most ``places`` decimals rounds back
    to itself: the bulk form may skip round(). Random cells at and near that bound."""
    rng = random.Random(places)
    digits = 15 - places
    f = Field("N", "N", "currency", "4", length=16, decimal_place=places)
    bulk = f.csv_column(None)
    for _ in range(2_000):
        whole = str(rng.randrange(10 ** rng.randint(digits - 2, digits)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, places)))
        cell = rng.choice(["", "-"]) + whole + (f".{frac}" if frac or rng.random() < 0.2 else "")
        assert round(float(cell), places) == float(cell), cell
        assert bulk([cell, "1"]) == [round(float(cell), places), 1.0], cell
    # one more integer digit than the bound: no longer vouched for by the one match
    assert bulk(["1" * (digits + 1) + ".5"]) == [round(float("1" * (digits + 1) + ".5"), places)]


HEADER = ["parent_id", "Name", "Customer_Name", "Email", "Order_Status", "Amount",
          "Currency_Code", "Quantity", "Order_Date", "Shipped_At", "Is_Gift", "Notes"]


def clean_row(key: str, rng: random.Random) -> list[str]:
    # now and then a name the result file must quote (a chunk with one goes through csv.writer)
    name = f'SO-{key}, "gift"' if rng.random() < 0.01 else f"SO-{key}"
    return [key, name, rng.choice(["Ravi Costa", "Olu Haddad"]), f"{key}@example.com",
            rng.choice(["Paid", "Shipped"]), f"{rng.randint(0, 999)}.{rng.randint(0, 99):02d}",
            rng.choice(["USD", "INR"]), str(rng.randint(1, 9)), "2024-05-01",
            rng.choice(["", "2023-12-18T15:10:00+00:00", "2024-01-02T03:04:05+00:00"]),
            rng.choice(["true", "false"]), rng.choice(["", "Leave at the door"])]


def noisy_row(rng: random.Random) -> list[str]:
    row = clean_row(rng.choice(["K1", "k1", "K2", "K3", "k3", f"N{rng.randint(0, 40)}"]), rng)
    col = rng.randrange(len(HEADER))
    kind = {"Email": "email", "Order_Status": "picklist", "Amount": "currency",
            "Currency_Code": "picklist", "Quantity": "integer", "Order_Date": "date",
            "Shipped_At": "datetime", "Is_Gift": "boolean"}.get(HEADER[col], "text")
    row[col] = rng.choice(CELLS[kind] + [""])
    return row


def upload(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([HEADER, *rows])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("orders.csv", text.getvalue())
    return out.getvalue()


def body(file_id: str, operation: str) -> dict[str, Any]:
    maps: list[dict[str, Any]] = [{"api_name": n, "index": i} for i, n in enumerate(HEADER)]
    maps[8]["format"] = "yyyy-MM-dd"
    maps[9]["format"] = "yyyy-MM-dd'T'HH:mm:ssXXX"
    return {"operation": operation, "resource": [{
        "type": "data", "module": {"api_name": "Orders"}, "file_id": file_id,
        "find_by": "parent_id", "field_mappings": maps}]}


def run_jobs(jobs: list[tuple[bytes, str]], column_path: bool,
             monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], dict[str, Any], int]:
    """Run ``jobs`` in order on a fresh State; (each job's counts and result CSV, the store, how
    many chunks went in one pass)."""
    passes = 0
    real_prepare, real_insert = sim_state.prepare_rows, RecordStore.insert_columns

    def insert(*args: Any) -> Any:
        nonlocal passes
        passes += 1
        return real_insert(*args)

    with monkeypatch.context() as m:
        m.setattr(sim_state, "INSTANT_CHUNK", 37)
        m.setattr(sim_state, "now_iso", lambda: "2026-12-07T06:00:00+00:00")  # both runs alike
        m.setattr(RecordStore, "insert_columns", insert)
        m.setattr(sim_state, "prepare_rows",
                  real_prepare if column_path else (lambda *args: None))
        st = State(load_schema(), client_id="a", client_secret="b", refresh_token="c",
                   zgid="1")
        m.setattr(st, "start_job", lambda job: None)
        outcome = []
        for data, operation in jobs:
            job = st.create_job(body(st.add_upload(data).file_id, operation), "http://sim")
            st._run_job(job, st.generation)
            with zipfile.ZipFile(io.BytesIO(job.result_zip() or b"")) as zf:
                text = zf.read(zf.namelist()[0]).decode()
            outcome.append((job.state, job.added, job.updated, job.skipped, text))
        store = st.stores["Orders"]
        shown = {"records": [(rid, list(r.items())) for rid, r in store.records.items()],
                 "index": {f: list(idx.items()) for f, idx in store.index.items()}}
        st.close()
    return outcome, shown, passes


@pytest.mark.parametrize("seed", range(6))
def test_jobs_column_by_column_match_row_by_row(seed: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    jobs = []
    fresh = iter(range(10**6))
    for operation in ("upsert", "insert", "upsert", "update", "upsert"):
        rows: list[list[str]] = []
        for _ in range(rng.randint(2, 6)):  # runs of clean new keys between runs of noise
            rows += [clean_row(f"C{seed}-{next(fresh)}", rng) for _ in range(rng.randint(30, 90))]
            rows += [noisy_row(rng) for _ in range(rng.randint(0, 12))]
        jobs.append((upload(rows), operation))
    fast = run_jobs(jobs, True, monkeypatch)
    slow = run_jobs(jobs, False, monkeypatch)
    assert fast[2] > 0 and slow[2] == 0  # the one-pass insert ran (not a vacuous comparison)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]


def test_records_kept_as_columns_behave_as_a_dict() -> None:
    """Records inserted in bulk are columns until read; reads, writes, deletes and iteration
    give what a plain dict of the same records gives, key order inside each record included."""
    recs, plain = Records(), {}
    ids = [f"r{i}" for i in range(6)]
    keys = ["Name", "Quantity", "id"]
    cols: list[list[Any]] = [["a", None, "c", "d", None, "f"], [1, 2, None, 4, None, 6], ids]
    tail = {"Owner": "u", "Created_Time": "t"}
    for rid in ("x0", "x1"):
        recs[rid] = {"id": rid}
        plain[rid] = {"id": rid}
        if rid == "x0":
            recs.add_columns(ids, keys, cols, tail)
            for k, i in enumerate(ids):
                values = {n: c[k] for n, c in zip(keys, cols, strict=True) if c[k] is not None}
                plain[i] = {**values, **tail}
    assert len(recs) == len(plain) and list(recs) == list(plain)
    assert "r3" in recs and "zz" not in recs and recs.get("zz") is None
    del recs["r1"], plain["r1"]  # deleted before any read: the segment must not bring it back
    recs["r2"]["Quantity"] = 9  # the first read makes the records: a write in place sticks
    plain["r2"]["Quantity"] = 9
    assert "r1" not in recs and recs.get("r2") == plain["r2"]
    assert [(i, list(r.items())) for i, r in recs.items()] == \
        [(i, list(r.items())) for i, r in plain.items()]
    recs.add_columns(["s0"], keys, [["z"], [None], ["s0"]], tail)
    assert list(recs.values())[-1] == {"Name": "z", "id": "s0", **tail}
