"""Benchmark zohosim: how fast it answers while a big load runs, what it costs, and throughput.

Starts its own ``zohosim serve --port 0`` (instant jobs). The default (latency) mode loads it as
an initial sync does: ``--rows`` rows in 25,000-row bulk jobs, ``--in-flight`` jobs at a time
(upload, create, poll, download), while a probe thread times create-job, job-status, upload and
single-record upsert calls. It prints each probe's p50 / p95 / max, the load's wall time, and
zohosim's CPU seconds and peak RSS (``/proc/<pid>``), beside a stand-in's floor: the least
any Python stand-in does with the same uploads (unzip, parse, store, result), timed in-process.
``--sim-from DIR`` runs the zohosim package of another checkout (e.g. ``/work/main``) to compare
before / after on the same machine.

``--throughput`` keeps the older figures: a 25,000-row job end to end (upload -> create -> poll ->
download) beside the floor of parsing the same CSV in-process, and upserts of 100 records from a
few client threads beside the HTTP floor (``GET /__sim/health``).

    .venv/bin/python bench/zohosim.py [--rows 200000] [--in-flight 3] [--sim-from DIR] [--json]
    .venv/bin/python bench/zohosim.py --throughput [--rows 25000] [--threads 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import statistics
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.procstat import own_seconds  # noqa: E402
from zohosim.cli import GC_THRESHOLDS  # noqa: E402
from zohosim.testing import SimProcess  # noqa: E402

TIMEOUT = 30.0
HEADER = ["parent_id", "Name", "Customer_Name", "Email", "Order_Status", "Amount",
          "Currency_Code", "Quantity", "Order_Date", "Shipped_At", "Is_Gift", "Notes"]


def token(sim: SimProcess) -> str:
    r = requests.post(f"{sim.base_url}/oauth/v2/token", timeout=TIMEOUT, data={
        "grant_type": "refresh_token", "client_id": sim.client_id,
        "client_secret": sim.client_secret, "refresh_token": sim.refresh_token})
    return str(r.json()["access_token"])


def zipped(text: str) -> bytes:
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("orders.csv", text)
    return zbuf.getvalue()


def csv_range(start: int, rows: int) -> str:
    """Rows ``start`` .. ``start + rows - 1`` (parent_id = the row number)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for i in range(start, start + rows):
        w.writerow([str(i), f"SO-{i}", f"Customer {i}", f"c{i}@example.com", "Paid",
                    f"{i % 1000}.50", "USD", "2", "2024-05-01", "2024-05-02T10:00:00+05:30",
                    "false", "bench"])
    return buf.getvalue()


def job_body(file_id: str) -> dict[str, Any]:
    fm: list[dict[str, Any]] = [{"api_name": n, "index": i} for i, n in enumerate(HEADER)]
    fm[8]["format"] = "yyyy-MM-dd"
    fm[9]["format"] = "yyyy-MM-dd'T'HH:mm:ssXXX"
    return {"operation": "upsert", "resource": [{
        "type": "data", "module": {"api_name": "Orders"}, "file_id": file_id,
        "find_by": "parent_id", "field_mappings": fm}]}


def bench_job(sim: SimProcess, rows: int) -> dict[str, Any]:
    text = csv_range(0, rows)
    data = zipped(text)
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
    job_id = s.post(f"{sim.base_url}/crm/bulk/v8/write", json=job_body(file_id), headers=h,
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




def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(samples: list[float]) -> dict[str, Any]:
    """n, p50, p95 and max of latencies in seconds, as milliseconds."""
    if not samples:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}


SERVER_APIS = {"create_job": "bulk_create", "job_status": "bulk_get", "upload": "upload",
               "upsert": "upsert"}


class Probe(threading.Thread):
    """Times create-job, job-status, upload and upsert calls, one every ``interval`` s."""

    def __init__(self, sim: SimProcess, auth: dict[str, str], interval: float) -> None:
        super().__init__(daemon=True)
        self.sim, self.auth, self.interval = sim, auth, interval
        self.stop = threading.Event()
        self.samples: dict[str, list[float]] = {
            "create_job": [], "job_status": [], "upload": [], "upsert": []}
        self.tiny = zipped(csv_range(10_000_000, 1))
        self.errors: list[str] = []

    def timed(self, s: requests.Session, kind: str, method: str, url: str,
              **kwargs: Any) -> requests.Response:
        t0 = time.perf_counter()
        r = s.request(method, url, timeout=TIMEOUT, **kwargs)
        self.samples[kind].append(time.perf_counter() - t0)
        if r.status_code >= 300:
            self.errors.append(f"{kind}: {r.status_code} {r.text[:200]}")
        return r

    def run(self) -> None:
        base = self.sim.base_url
        up_headers = {**self.auth, "feature": "bulk-write", "X-CRM-ORG": self.sim.zgid}
        n = 0
        with requests.Session() as s:
            while not self.stop.wait(self.interval):
                n += 1
                r = self.timed(s, "upload", "POST", f"{base}/crm/v8/upload",
                               files={"file": ("probe.zip", self.tiny)}, headers=up_headers)
                if r.status_code != 200:
                    continue
                file_id = r.json()["details"]["file_id"]
                r = self.timed(s, "create_job", "POST", f"{base}/crm/bulk/v8/write",
                               json=job_body(file_id), headers=self.auth)
                if r.status_code != 201:
                    continue
                job_id = r.json()["details"]["id"]
                self.timed(s, "job_status", "GET", f"{base}/crm/bulk/v8/write/{job_id}",
                           headers=self.auth)
                record = {"Name": f"P-{n}", "parent_id": f"probe-{n}", "Amount": 1.5}
                self.timed(s, "upsert", "POST", f"{base}/crm/v8/Orders/upsert",
                           headers=self.auth,
                           json={"data": [record], "duplicate_check_fields": ["parent_id"]})


def run_load(sim: SimProcess, auth: dict[str, str], zips: list[bytes], in_flight: int
             ) -> int:
    """Upload, create, poll and download every zip, ``in_flight`` jobs at a time; rows added."""
    base = sim.base_url
    up_headers = {**auth, "feature": "bulk-write", "X-CRM-ORG": sim.zgid}
    pending = list(zips)
    running: list[str] = []
    added = 0
    with requests.Session() as s:
        while pending or running:
            while pending and len(running) < in_flight:
                r = s.post(f"{base}/crm/v8/upload", files={"file": ("orders.zip", pending.pop(0))},
                           headers=up_headers, timeout=TIMEOUT)
                file_id = r.json()["details"]["file_id"]
                r = s.post(f"{base}/crm/bulk/v8/write", json=job_body(file_id), headers=auth,
                           timeout=TIMEOUT)
                assert r.status_code == 201, r.text
                running.append(r.json()["details"]["id"])
            time.sleep(0.05)
            for job_id in list(running):
                job = s.get(f"{base}/crm/bulk/v8/write/{job_id}", headers=auth,
                            timeout=TIMEOUT).json()
                if job["status"] == "COMPLETED":
                    result = s.get(job["result"]["download_url"], headers=auth, timeout=TIMEOUT)
                    assert result.status_code == 200 and result.content[:2] == b"PK"
                    added += int(job["resource"][0]["file"]["added_count"])
                    running.remove(job_id)
                elif job["status"] == "FAILED":
                    raise RuntimeError(f"job {job_id} failed")
    return added


@contextmanager
def sim_process(sim_from: str | None) -> Iterator[SimProcess]:
    """zohosim of this checkout, or of the checkout at ``sim_from``."""
    env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(Path(sim_from).resolve())} if sim_from else {}
    with SimProcess(env=env) as sim:
        yield sim


def stand_in_floor(zips: list[bytes]) -> float:
    """CPU seconds of the least any Python stand-in does with these uploads, in this process:
    unzip, decode, parse, one dict entry per record and per unique key, the result CSV (three
    cells, status, id), zipped. No field checks, no conversion, no HTTP, one thread."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # as zohosim tunes it
    records: dict[str, Any] = {}
    index: dict[str, str] = {}
    first_id = 5725767000000000000
    started = time.process_time()
    for data in zips:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            text = zf.read(zf.namelist()[0]).decode("utf-8")
        rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
        columns = list(zip(*rows, strict=True))
        ids = list(map(str, range(first_id, first_id + len(rows))))
        first_id += len(rows)
        records.update(zip(ids, repeat(columns)))
        index.update(zip(columns[0], ids, strict=True))
        lines = zip(columns[0], columns[1], columns[2], repeat("ADDED"), ids, repeat(""))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("result.csv", "\n".join(map(",".join, lines)))
    seconds = time.process_time() - started
    records.clear()
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    return seconds


def bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    """The load alone (CPU, wall, peak RSS), then the same load again under the probes."""
    per_job = 25_000
    zips = [zipped(csv_range(start, min(per_job, args.rows - start)))
            for start in range(0, args.rows, per_job)]
    with sim_process(args.sim_from) as sim:
        sim.admin.configure(refresh_limit=1000)
        auth = {"Authorization": f"Zoho-oauthtoken {token(sim)}"}
        pid = sim.proc.pid
        cpu0 = own_seconds(pid)
        t0 = time.perf_counter()
        added = run_load(sim, auth, zips, args.in_flight)
        wall = time.perf_counter() - t0
        cpu = own_seconds(pid) - cpu0
        rss = vm_hwm_mb(pid)
        records = sim.admin.stats()["records"]["Orders"]
        sim.admin.reset()  # records, jobs and tokens: the second pass starts as the first
        sim.admin.configure(refresh_limit=1000)
        auth = {"Authorization": f"Zoho-oauthtoken {token(sim)}"}
        # the probe's answers with no load running: the floor the loaded figures compare to
        idle = Probe(sim, auth, 0.02)
        idle.start()
        time.sleep(1.0)
        idle.stop.set()
        idle.join()
        probe = Probe(sim, auth, args.probe_interval)
        started_at = time.time()
        t1 = time.perf_counter()
        cpu1 = own_seconds(pid)
        probe.start()
        run_load(sim, auth, zips, args.in_flight)
        probed_wall = time.perf_counter() - t1
        probe.stop.set()
        probe.join()
        probed_cpu = own_seconds(pid) - cpu1
        log = [r for r in sim.admin.requests()["requests"] if r["start"] >= started_at]
        if probe.errors or idle.errors:
            raise RuntimeError(f"probe calls failed: {(idle.errors + probe.errors)[:5]}")
    floor = stand_in_floor(zips)
    return {
        "mode": "latency",
        "sim": str(Path(args.sim_from).resolve()) if args.sim_from else "this checkout",
        "rows": args.rows,
        "jobs": len(zips),
        "in_flight": args.in_flight,
        "rows_added": added,
        "records": records,
        "wall_s": round(wall, 2),
        "rows_per_s": round(args.rows / wall),
        "sim_cpu_s": round(cpu, 2),
        "sim_cpu_share": round(cpu / wall, 3),
        "sim_peak_rss_mb": round(rss, 1),
        "stand_in_floor_cpu_s": round(floor, 3),
        "sim_cpu_over_floor": round(cpu / floor, 2) if floor else None,
        "sim_startup_cpu_s": round(cpu0, 2),
        "probed_wall_s": round(probed_wall, 2),
        "probed_sim_cpu_s": round(probed_cpu, 2),
        "probes": {k: summary(v) for k, v in probe.samples.items()},
        "idle_probes": {k: summary(v) for k, v in idle.samples.items()},
        # every call of the load and the probes, as zohosim timed it (request read to answer)
        "server_side": {k: summary([r["end"] - r["start"] for r in log if r["api"] == api])
                        for k, api in SERVER_APIS.items()},
    }


def print_latency(f: dict[str, Any]) -> None:
    print(f"zohosim under load ({f['sim']}): {f['rows']:,} rows in {f['jobs']} bulk jobs, "
          f"{f['in_flight']} in flight: {f['wall_s']} s ({f['rows_per_s']:,} rows/s)")
    print(f"  zohosim CPU {f['sim_cpu_s']} s = {f['sim_cpu_share']:.0%} of the wall time; "
          f"peak RSS {f['sim_peak_rss_mb']} MB; {f['records']:,} records held")
    print(f"  floor: the least a Python stand-in does with the same uploads (unzip, parse, store, "
          f"result; no checks, no HTTP, one thread) {f['stand_in_floor_cpu_s']} s CPU; zohosim "
          f"{f['sim_cpu_over_floor']}x that")
    print(f"  the same load under the probes: {f['probed_wall_s']} s, zohosim CPU "
          f"{f['probed_sim_cpu_s']} s")
    print("  probe latency, ms       loaded p50 / p95 / max (n)      idle p50 / p95")
    for kind, s in f["probes"].items():
        i = f["idle_probes"][kind]
        print(f"    {kind:<12} {s['p50_ms']:>12} / {s['p95_ms']:>6} / {s['max_ms']:>6} "
              f"({s['n']:>4})      {i['p50_ms']:>6} / {i['p95_ms']:>6}")
    print("  inside zohosim (all calls, read to answer): "
          + "; ".join(f"{k} p50 {s['p50_ms']} p95 {s['p95_ms']} ms"
                      for k, s in f["server_side"].items()))


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rows", type=int, default=None,
                   help="rows to load (latency: 200000) or of the one job (--throughput: 25000)")
    p.add_argument("--in-flight", type=int, default=3, help="bulk jobs running at a time")
    p.add_argument("--probe-interval", type=float, default=0.05,
                   help="seconds between rounds of probe calls")
    p.add_argument("--sim-from", default=None,
                   help="run the zohosim package of this checkout (before/after comparisons)")
    p.add_argument("--throughput", action="store_true",
                   help="the throughput figures: one job end to end, upsert calls/s")
    p.add_argument("--threads", type=int, default=4, help="--throughput: upsert threads")
    p.add_argument("--seconds", type=float, default=3.0, help="--throughput: seconds per case")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if not args.throughput:
        args.rows = 200_000 if args.rows is None else args.rows
        figures = bench_latency(args)
        if args.json:
            print(json.dumps(figures))
        else:
            print_latency(figures)
        return 0
    with sim_process(args.sim_from) as sim:
        sim.admin.configure(refresh_limit=1000)
        job = bench_job(sim, args.rows or 25_000)
        sim.admin.reset()
        ups = bench_upserts(sim, args.threads, args.seconds)
    if args.json:
        print(json.dumps({"mode": "throughput", "bulk_job": job, "upserts": ups}))
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
