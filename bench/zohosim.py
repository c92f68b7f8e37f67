"""Benchmark zohosim: a 25,000-row bulk job end to end, and upsert throughput.

Starts its own ``zohosim serve --port 0`` (instant jobs) and prints:
- the bulk job: upload -> create -> poll -> download, seconds and rows/s, beside the floor of
  merely parsing the same CSV in this process;
- upserts of 100 records from a few client threads: calls/s and records/s, beside the HTTP floor
  (``GET /__sim/health`` calls/s with the same threads and connections).

    .venv/bin/python bench/zohosim.py [--rows 25000] [--threads 4] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zohosim.testing import SimProcess  # noqa: E402

TIMEOUT = 30.0
HEADER = ["parent_id", "Name", "Customer_Name", "Email", "Order_Status", "Amount",
          "Currency_Code", "Quantity", "Order_Date", "Shipped_At", "Is_Gift", "Notes"]


def csv_text(rows: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for i in range(rows):
        w.writerow([str(i), f"SO-{i}", f"Customer {i}", f"c{i}@example.com", "Paid",
                    f"{i % 1000}.50", "USD", "2", "2024-05-01", "2024-05-02T10:00:00+05:30",
                    "false", "bench"])
    return buf.getvalue()


def token(sim: SimProcess) -> str:
    r = requests.post(f"{sim.base_url}/oauth/v2/token", timeout=TIMEOUT, data={
        "grant_type": "refresh_token", "client_id": sim.client_id,
        "client_secret": sim.client_secret, "refresh_token": sim.refresh_token})
    return str(r.json()["access_token"])


def bench_job(sim: SimProcess, rows: int) -> dict[str, Any]:
    text = csv_text(rows)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("orders.csv", text)
    data = zbuf.getvalue()
    t0 = time.perf_counter()
    parsed = list(csv.reader(io.StringIO(zipfile.ZipFile(io.BytesIO(data)).read(
        "orders.csv").decode())))
    floor = time.perf_counter() - t0
    assert len(parsed) == rows + 1

    h = {"Authorization": f"Zoho-oauthtoken {token(sim)}"}
    s = requests.Session()
    t0 = time.perf_counter()
    r = s.post(f"{sim.base_url}/crm/v8/upload", files={"file": ("orders.zip", data)},
               headers={**h, "feature": "bulk-write", "X-CRM-ORG": sim.zgid}, timeout=TIMEOUT)
    file_id = r.json()["details"]["file_id"]
    t_upload = time.perf_counter()
    fm: list[dict[str, Any]] = [{"api_name": n, "index": i} for i, n in enumerate(HEADER)]
    fm[8]["format"] = "yyyy-MM-dd"
    fm[9]["format"] = "yyyy-MM-dd'T'HH:mm:ssXXX"
    body: dict[str, Any] = {"operation": "upsert", "resource": [{
        "type": "data", "module": {"api_name": "Orders"}, "file_id": file_id,
        "find_by": "parent_id", "field_mappings": fm}]}
    job_id = s.post(f"{sim.base_url}/crm/bulk/v8/write", json=body, headers=h,
                    timeout=TIMEOUT).json()["details"]["id"]
    polls = 0
    while True:
        polls += 1
        job = s.get(f"{sim.base_url}/crm/bulk/v8/write/{job_id}", headers=h,
                    timeout=TIMEOUT).json()
        if job["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.01)
    t_done = time.perf_counter()
    result = s.get(job["result"]["download_url"], headers=h, timeout=TIMEOUT).content
    t_end = time.perf_counter()
    s.close()
    counts = job["resource"][0]["file"]
    assert counts["added_count"] == rows, counts
    total = t_end - t0
    return {
        "rows": rows,
        "upload_s": round(t_upload - t0, 3),
        "process_s": round(t_done - t_upload, 3),
        "download_s": round(t_end - t_done, 3),
        "total_s": round(total, 3),
        "rows_per_s": round(rows / total),
        "polls": polls,
        "result_bytes": len(result),
        "floor_parse_s": round(floor, 3),
        "floor_rows_per_s": round(rows / floor),
    }


def run_threads(threads: int, seconds: float, call: Callable[[requests.Session, int], int]
                ) -> tuple[int, int]:
    """Run ``call`` in a loop on each thread for ``seconds``; (calls, records)."""
    stop = time.perf_counter() + seconds
    totals = [[0, 0] for _ in range(threads)]

    def worker(k: int) -> None:
        with requests.Session() as s:
            n = 0
            while time.perf_counter() < stop:
                totals[k][1] += call(s, k * 10_000_000 + n)
                totals[k][0] += 1
                n += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def bench_upserts(sim: SimProcess, threads: int, seconds: float) -> dict[str, Any]:
    h = {"Authorization": f"Zoho-oauthtoken {token(sim)}"}
    url = f"{sim.base_url}/crm/v8/Orders/upsert"

    def health(s: requests.Session, _n: int) -> int:
        s.get(f"{sim.base_url}/__sim/health", timeout=TIMEOUT)
        return 0

    def upsert100(s: requests.Session, n: int) -> int:
        recs: list[dict[str, Any]] = [
            {"Name": f"SO-{n}-{i}", "parent_id": f"{n}-{i}", "Amount": 10.5,
             "Order_Date": "2024-05-01", "Email": "a@example.com"} for i in range(100)]
        r = s.post(url, json={"data": recs, "duplicate_check_fields": ["parent_id"]},
                   headers=h, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return 100

    def upsert1(s: requests.Session, n: int) -> int:
        r = s.post(url, json={"data": [{"Name": f"S-{n}", "parent_id": f"s-{n}"}]},
                   headers=h, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return 1

    hc, _ = run_threads(threads, seconds, health)
    c1, r1 = run_threads(threads, seconds, upsert1)
    c100, r100 = run_threads(threads, seconds, upsert100)
    return {
        "threads": threads,
        "seconds": seconds,
        "floor_health_calls_per_s": round(hc / seconds),
        "upsert1_calls_per_s": round(c1 / seconds),
        "upsert100_calls_per_s": round(c100 / seconds, 1),
        "upsert100_records_per_s": round(r100 / seconds),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=25_000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    with SimProcess() as sim:
        sim.admin.configure(refresh_limit=1000)
        job = bench_job(sim, args.rows)
        sim.admin.reset()
        ups = bench_upserts(sim, args.threads, args.seconds)
    if args.json:
        print(json.dumps({"bulk_job": job, "upserts": ups}))
        return 0
    print(f"bulk job, {job['rows']} rows (instant mode): {job['total_s']} s end to end = "
          f"{job['rows_per_s']} rows/s  (upload {job['upload_s']} s, processing "
          f"{job['process_s']} s, download {job['download_s']} s)")
    print(f"  floor: parsing the same CSV in-process {job['floor_parse_s']} s = "
          f"{job['floor_rows_per_s']} rows/s")
    print(f"upserts, {ups['threads']} threads x {ups['seconds']} s: "
          f"{ups['upsert100_calls_per_s']} calls/s of 100 records = "
          f"{ups['upsert100_records_per_s']} records/s; single-record upserts "
          f"{ups['upsert1_calls_per_s']} calls/s")
    print(f"  floor: GET /__sim/health {ups['floor_health_calls_per_s']} calls/s "
          f"(HTTP round trip, same threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
