"""Everything the simulator remembers: config, tokens, credits, records, uploads, jobs, faults.

One ``State`` per server, guarded by one lock. Bulk jobs are converted a chunk at a time, column by
column, before the lock is taken (``bulk.prepare_rows``), and applied in bursts of ``INSTANT_CHUNK``
rows per hold of that lock (a chunk of plain inserts in one pass), one job thread at a time (the
``work`` lock); between bursts the job steps aside while requests wait for the lock, so create-job,
job status, upload and upsert answer at once while a job runs, as at Zoho. What a job no longer
needs leaves memory: an upload's parsed rows once its job has taken them (the zip is spilled to a
temporary directory), the job's rows once processed, its result zip kept in that directory, as Zoho
keeps result files for a while. With a state file, records, uploads, jobs and the credit ledger are
written through to SQLite and loaded again at start.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zohosim.bulk import (
    ApiError,
    CsvFile,
    JobSpec,
    Prepared,
    ResultFile,
    Upload,
    apply_values,
    compile_job,
    parse_upload,
    prepare_rows,
    process_row,
    validate_job,
)
from zohosim.records import SIM_USER, RecordStore
from zohosim.schema import Schema, format_datetime, set_time_zone

log = logging.getLogger("zohosim")

REALISTIC_ROWS_PER_SECOND = 25_000 / 60
INSTANT_CHUNK = 2_500  # rows per hold of the state lock at most (~50 ms), then requests go first
YIELD_AFTER_ROWS = 50  # a burst ends early, after this many rows, once a request waits (~1 ms)
STEP_ASIDE_SECONDS = 0.05  # the longest a job waits for the requests queued behind it
API_NAMES = ("token", "org", "users", "fields", "records_get", "upload", "bulk_create",
             "bulk_get", "download", "upsert", "modules", "search",
             "bulk_read_create", "bulk_read_get", "bulk_read_download")
# Credits per call; upsert is ceil(records / 10) and uses the value as "credits per 10 records".
# upload / bulk_get / download: UNCONFIRMED in the contract (§7.2), 0 here, configurable.
DEFAULT_CREDIT_COSTS = {
    "org": 1, "users": 1, "fields": 1, "records_get": 1, "upload": 0, "bulk_create": 500,
    "bulk_get": 0, "download": 0, "upsert": 1, "modules": 1,
    "search": 1,
    # Bulk Read: 50 per job initialise (§7.2); status and download UNCONFIRMED, 0 here
    "bulk_read_create": 50, "bulk_read_get": 0, "bulk_read_download": 0,
    # Delete Records: charged like insert/update/upsert, 1 per 10 ids (UNCONFIRMED, §7.2)
    "delete": 1,
}
DEFAULT_CONFIG: dict[str, Any] = {
    "token_ttl": 3600,
    "refresh_limit": 10,
    "refresh_window_seconds": 600,
    "max_live_tokens": 15,
    "credit_limit": 5_000_000,
    "credit_window_seconds": 86_400,
    "credit_costs": dict(DEFAULT_CREDIT_COSTS),
    "concurrency": 20,
    "sub_concurrency": 10,
    "sub_concurrency_threshold": 10,
    "job_rows_per_second": 0,
    "job_queue_seconds": 0.0,
    "max_bulk_jobs": 0,  # bulk write jobs running at once (ADDED or IN PROGRESS); 0 = unlimited
    "status_spelling": "IN PROGRESS",
    "download_url_style": "absolute",
    "latency_ms": 0,
    "callback_timeout": 10.0,
    "page_limit": 2000,
    "time_zone": "UTC",
    # switches for client robustness tests (each a documented or reported Zoho variant)
    "token_expiry_legacy": False,  # v2-era answer: expires_in in ms plus expires_in_sec
    "expired_token_code": "INVALID_TOKEN",  # or AUTHENTICATION_FAILURE, seen for expired tokens
    "upload_errors_http_200": False,  # upload errors with HTTP 200 and status "error"
}


def now_iso() -> str:
    return format_datetime(datetime.now(UTC))


# "401-echo" / "500-echo": that status with a body repeating the request (headers, query, body),
# as a debugging gateway or a proxy's error page in front of Zoho may; for leak tests.
FAULT_KINDS = ("500", "503", "429", "drop", "stall", "401-echo", "500-echo")


@dataclass
class Fault:
    api: str
    kind: str
    count: int
    seconds: float = 0.0


class StepAsideLock:
    """A reentrant lock that knows how many threads wait for it and how many calls are served.

    Python's locks are not fair: a thread that releases one and asks again at once gets it back
    before the woken waiter runs. A job thread calls :meth:`step_aside` between its bursts, so
    the requests that queued up during a burst, and those being answered (a call takes the lock
    several times: token, limits, handler, log), go first.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._count = threading.Lock()
        self._quiet = threading.Condition(self._count)  # no call waiting or being answered
        self.waiting = 0
        self.serving = 0

    def call_started(self) -> None:
        with self._count:
            self.serving += 1

    def call_ended(self) -> None:
        with self._count:
            self.serving -= 1
            if not (self.serving or self.waiting):
                self._quiet.notify_all()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        with self._count:
            self.waiting += 1
        try:
            return self._lock.acquire(timeout=timeout)
        finally:
            with self._count:
                self.waiting -= 1
                if not (self.serving or self.waiting):
                    self._quiet.notify_all()

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def step_aside(self, limit: float) -> None:
        """Wait, not holding the lock, while calls are answered (at most ``limit`` s)."""
        if not (self.waiting or self.serving):
            return
        with self._count:
            self._quiet.wait_for(lambda: not (self.waiting or self.serving), timeout=limit)


@dataclass
class Job:
    """One bulk write job."""

    id: str
    body: dict[str, Any]
    spec: JobSpec
    created_time: str
    host_base: str
    state: str = "ADDED"  # ADDED / IN_PROGRESS / COMPLETED / FAILED
    added: int = 0
    updated: int = 0
    skipped: int = 0
    processed: int = 0
    fail: bool = False
    result_name: str = ""
    result_path: Path | None = None  # the result zip, in State.files
    total: int = field(init=False)

    def __post_init__(self) -> None:
        self.total = len(self.spec.csv.rows)

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETED", "FAILED")

    def drop_rows(self) -> None:
        """The rows are processed: keep only the CSV's name and header."""
        csvf = self.spec.csv
        self.spec.csv = CsvFile(csvf.name, csvf.header, [], b"")

    def result_zip(self) -> bytes | None:
        try:
            return self.result_path.read_bytes() if self.result_path is not None else None
        except FileNotFoundError:  # removed by a reset meanwhile
            return None


class Persistence:
    """Write-through SQLite copy of records, uploads, jobs and credits."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS records (module TEXT, id TEXT PRIMARY KEY, data TEXT);
            CREATE TABLE IF NOT EXISTS uploads (file_id TEXT PRIMARY KEY, created_time TEXT,
                                                data BLOB);
            CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, data TEXT, result BLOB);
            CREATE TABLE IF NOT EXISTS credits (ts REAL, api TEXT, credits INTEGER);
            """
        )

    def set_kv(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))

    def get_kv(self, key: str, default: Any) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def save_records(self, module: str, records: list[dict[str, Any]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                            [(module, r["id"], json.dumps(r)) for r in records])
        self.db.execute("COMMIT")

    def delete_records(self, ids: list[str]) -> None:
        self.db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])

    def save_upload(self, up: Upload) -> None:
        self.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?)",
                        (up.file_id, up.created_time, up.zip_bytes()))

    def save_job(self, job: Job) -> None:
        data = {
            "id": job.id, "body": job.body, "created_time": job.created_time,
            "host_base": job.host_base, "state": job.state, "added": job.added,
            "updated": job.updated, "skipped": job.skipped, "processed": job.processed,
            "fail": job.fail, "result_name": job.result_name,
        }
        self.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
                        (job.id, json.dumps(data), job.result_zip()))

    def add_credit(self, ts: float, api: str, credits: int) -> None:
        self.db.execute("INSERT INTO credits VALUES (?, ?, ?)", (ts, api, credits))

    def clear(self) -> None:
        self.db.executescript(
            "DELETE FROM records; DELETE FROM uploads; DELETE FROM jobs; DELETE FROM credits;"
        )


class State:
    """The whole simulated Zoho org."""

    def __init__(
        self,
        schema: Schema,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        zgid: str,
        config: dict[str, Any] | None = None,
        state_file: str | Path | None = None,
    ) -> None:
        self.lock = StepAsideLock()
        self.work = threading.Lock()  # one job thread processes rows at a time
        # result zips and spilled uploads; removed by close() or at interpreter exit
        self.files = Path(tempfile.mkdtemp(prefix="zohosim-files-"))
        self._remove_files = weakref.finalize(self, shutil.rmtree, self.files, True)
        self.schema = schema
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.zgid = zgid
        self.org_id = "5725767000000000001"
        self.config: dict[str, Any] = json.loads(json.dumps(DEFAULT_CONFIG))
        set_time_zone(self.config["time_zone"])
        if config:
            self.update_config(config)
        self.base_url = ""
        self.stores = {name: RecordStore(m) for name, m in schema.modules.items()}
        self.persist = Persistence(state_file) if state_file else None
        self._reset_memory()
        if self.persist is not None:
            self._load()

    # ---- config / reset -------------------------------------------------------------------
    def update_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for key, value in changes.items():
                if key not in DEFAULT_CONFIG:
                    raise ValueError(f"unknown config key {key!r}")
                if key == "credit_costs":
                    if not isinstance(value, dict):
                        raise ValueError("credit_costs must be an object")
                    self.config["credit_costs"].update({k: int(v) for k, v in value.items()})
                elif key == "status_spelling":
                    if value not in ("IN PROGRESS", "INPROGRESS"):
                        raise ValueError("status_spelling must be 'IN PROGRESS' or 'INPROGRESS'")
                    self.config[key] = value
                elif key == "time_zone":
                    set_time_zone(str(value))
                    self.config[key] = str(value)
                elif key == "expired_token_code":
                    if value not in ("INVALID_TOKEN", "AUTHENTICATION_FAILURE"):
                        raise ValueError("expired_token_code must be INVALID_TOKEN or "
                                         "AUTHENTICATION_FAILURE")
                    self.config[key] = value
                elif key == "download_url_style":
                    if value not in ("absolute", "relative"):
                        raise ValueError("download_url_style must be 'absolute' or 'relative'")
                    self.config[key] = value
                else:
                    default = DEFAULT_CONFIG[key]
                    if isinstance(default, bool) and not isinstance(value, bool):
                        raise ValueError(f"{key} must be true or false")
                    self.config[key] = type(default)(value)
            return json.loads(json.dumps(self.config))

    def _reset_memory(self) -> None:
        for s in self.stores.values():
            s.clear()
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, tuple[float, str]] = {}  # token -> (expires_at, refresh token)
        self.live: dict[str, deque[str]] = {}  # refresh token -> live access tokens, oldest first
        self.refresh_times: dict[str, deque[float]] = {}
        self.tokens_issued = 0
        self.revoked: set[str] = set()
        self.credits: deque[list[Any]] = deque()  # [ts, credits, api, generation]
        self.used = 0
        self.calls_by_api: dict[str, int] = {}
        self.faults: list[Fault] = []
        self.requests: deque[dict[str, Any]] = deque(maxlen=20_000)
        # calls in flight survive a reset: their release() must find the counters consistent
        self.active: int = getattr(self, "active", 0)
        self.active_sub: int = getattr(self, "active_sub", 0)
        self.max_concurrent = self.active
        self.max_concurrent_sub = self.active_sub
        self.fail_next = 0
        self.generation = getattr(self, "generation", 0) + 1
        self.next_seq = getattr(self, "next_seq", 400_000)

    def reset(self) -> None:
        with self.lock:
            self._reset_memory()
            for path in self.files.iterdir():
                path.unlink(missing_ok=True)
            if self.persist is not None:
                self.persist.clear()

    def close(self) -> None:
        """Remove the temporary directory of result zips and spilled uploads."""
        self._remove_files()

    def new_id(self) -> str:
        """A fresh all-digit 19-digit Zoho id."""
        with self.lock:
            return self._next_id()

    def _next_id(self) -> str:
        """:meth:`new_id` for a caller that holds the lock."""
        self.next_seq += 1
        if self.persist is not None and self.next_seq % 1000 == 1:
            self.persist.set_kv("next_seq", self.next_seq + 1000)
        return str(5725767000000000000 + self.next_seq)

    def _take_ids(self, n: int) -> list[str]:
        """``n`` fresh ids at once, as ``n`` calls of :meth:`_next_id` give them (lock held)."""
        if self.persist is not None:  # the sequence is written through every 1,000 ids
            return [self._next_id() for _ in range(n)]
        first = 5725767000000000000 + self.next_seq + 1
        self.next_seq += n
        return list(map(str, range(first, first + n)))

    # ---- persistence ----------------------------------------------------------------------
    def _load(self) -> None:
        assert self.persist is not None
        db = self.persist.db
        self.next_seq = int(self.persist.get_kv("next_seq", self.next_seq))
        for module, data in db.execute("SELECT module, data FROM records ORDER BY rowid"):
            if module in self.stores:
                self.stores[module].load(json.loads(data))
        for file_id, created, data in db.execute("SELECT file_id, created_time, data FROM uploads"):
            self.uploads[file_id] = Upload(file_id, created, data, parse_upload(data))
        horizon = time.time() - self.config["credit_window_seconds"]
        for ts, api, credits in db.execute("SELECT ts, api, credits FROM credits ORDER BY ts"):
            if ts >= horizon:
                self.credits.append([ts, credits, api, self.generation])
                self.used += credits
        resume = []
        for data, result in db.execute("SELECT data, result FROM jobs ORDER BY rowid"):
            d = json.loads(data)
            try:
                spec = validate_job(d["body"], self.schema, self.uploads)
            except ApiError:
                continue
            job = Job(d["id"], d["body"], spec, d["created_time"], d["host_base"], d["state"],
                      d["added"], d["updated"], d["skipped"], d["processed"], d["fail"],
                      d["result_name"])
            if result is not None:
                job.result_path = self.files / f"result-{job.id}.zip"
                job.result_path.write_bytes(result)
            if job.finished:
                job.drop_rows()
            self.jobs[job.id] = job
            if not job.finished:
                resume.append(job)
        for job in resume:
            job.state, job.added, job.updated, job.skipped, job.processed = "ADDED", 0, 0, 0, 0
            self.start_job(job)

    def _save_records(self, module: str, records: list[dict[str, Any]]) -> None:
        if self.persist is not None and records:
            self.persist.save_records(module, records)

    # ---- tokens ---------------------------------------------------------------------------
    def grant(self, params: dict[str, str], api_domain: str | None = None) -> dict[str, Any]:
        """The token endpoint: always a dict for an HTTP 200 answer (§1.3–1.5).

        ``api_domain`` is the base URL the client reached us on (default: our bound address).
        """
        grant_type = params.get("grant_type")
        if grant_type != "refresh_token":
            if grant_type == "authorization_code":
                return {"error": "invalid_code"}
            return {"error": "unsupported_grant_type"}
        if params.get("client_id") != self.client_id or \
                params.get("client_secret") != self.client_secret:
            return {"error": "invalid_client"}
        refresh = params.get("refresh_token")
        if refresh != self.refresh_token or refresh in self.revoked:
            return {"error": "invalid_code"}
        with self.lock:
            now = time.time()
            times = self.refresh_times.setdefault(refresh, deque())
            while times and times[0] <= now - self.config["refresh_window_seconds"]:
                times.popleft()
            if len(times) >= self.config["refresh_limit"]:
                return {
                    "error_description": "You have made too many requests continuously. "
                                         "Please try again after some time.",
                    "error": "Access Denied",
                    "status": "failure",
                }
            times.append(now)
            token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            ttl = self.config["token_ttl"]
            self.tokens[token] = (now + ttl, refresh)
            live = self.live.setdefault(refresh, deque())
            live.append(token)
            while len(live) > self.config["max_live_tokens"]:
                self.tokens.pop(live.popleft(), None)
            self.tokens_issued += 1
        return {
            "access_token": token,
            "scope": "ZohoCRM.modules.ALL ZohoCRM.bulk.ALL ZohoFiles.files.ALL "
                     "ZohoCRM.org.READ ZohoCRM.settings.fields.READ ZohoCRM.users.READ",
            "api_domain": api_domain or self.base_url,
            "token_type": "Bearer",
            **({"expires_in": ttl * 1000, "expires_in_sec": ttl}
               if self.config["token_expiry_legacy"] else {"expires_in": ttl}),
        }

    def check_token(self, header: str | None) -> ApiError | None:
        """None when the Authorization header carries a live token (§1.6)."""
        prefix = "zoho-oauthtoken "
        if not header or not header.lower().startswith(prefix) or not header[len(prefix):].strip():
            return ApiError(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        token = header[len(prefix):].strip()
        with self.lock:
            entry = self.tokens.get(token)
            if entry is None or entry[0] <= time.time():
                if entry is not None and self.config["expired_token_code"] != "INVALID_TOKEN":
                    return ApiError(401, "AUTHENTICATION_FAILURE", "Authentication failed")
                return ApiError(401, "INVALID_TOKEN", "invalid oauth token")
        return None

    def revoke(self, token: str | None) -> dict[str, Any]:
        """``POST /oauth/v2/token/revoke?token=<refresh token>`` (§1.7)."""
        with self.lock:
            if token != self.refresh_token or token in self.revoked:
                return {"error": "invalid_token"}
            self.revoked.add(token)
            for access in self.live.pop(token, deque()):
                self.tokens.pop(access, None)
        return {"status": "success"}

    def invalidate_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()
            self.live.clear()

    # ---- faults ---------------------------------------------------------------------------
    def add_fault(self, api: str, kind: str, count: int, seconds: float) -> None:
        if api != "*" and api not in API_NAMES:
            raise ValueError(f"unknown api {api!r}; one of {', '.join(API_NAMES)} or '*'")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        with self.lock:
            self.faults.append(Fault(api, kind, int(count), float(seconds)))

    def take_fault(self, api: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.count > 0 and f.api in (api, "*"):
                    f.count -= 1
                    if f.count == 0:
                        self.faults.remove(f)
                    return f
        return None

    # ---- limits ---------------------------------------------------------------------------
    def cost(self, api: str, records: int = 0) -> int:
        per = int(self.config["credit_costs"].get(api, 0))
        if api in ("upsert", "delete"):
            return per * max(1, -(-records // 10))
        return per

    def _prune(self, now: float) -> None:
        horizon = now - self.config["credit_window_seconds"]
        while self.credits and self.credits[0][0] < horizon:
            self.used -= self.credits.popleft()[1]

    def admit(self, api: str, sub: bool, cost: int) -> tuple[str | None, list[Any] | None]:
        """Take a concurrency slot and reserve credits; (refusal message, credit entry)."""
        with self.lock:
            if self.active >= self.config["concurrency"]:
                return "You have reached the concurrency limit", None
            if sub and self.active_sub >= self.config["sub_concurrency"]:
                return "You have reached the sub-concurrency limit", None
            now = time.time()
            self._prune(now)
            if self.used + cost > self.config["credit_limit"]:
                return "You have exceeded the 24 hour API limit", None
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)
            if sub:
                self.active_sub += 1
                self.max_concurrent_sub = max(self.max_concurrent_sub, self.active_sub)
            entry = [now, cost, api, self.generation]
            if cost:
                self.credits.append(entry)
                self.used += cost
            return None, entry

    def release(self, sub: bool, entry: list[Any], charge: bool) -> None:
        with self.lock:
            self.active -= 1
            if sub:
                self.active_sub -= 1
            if entry[1] and entry[3] == self.generation:  # not for calls from before a reset
                if not charge:
                    self.used -= entry[1]
                    entry[1] = 0
                elif self.persist is not None:
                    self.persist.add_credit(entry[0], entry[2], entry[1])

    def credits_remaining_header(self) -> str | None:
        with self.lock:
            self._prune(time.time())
            limit = self.config["credit_limit"]
            if self.used * 2 >= limit:
                return str(max(0, limit - self.used))
        return None

    def credit_report(self) -> dict[str, Any]:
        with self.lock:
            self._prune(time.time())
            by_api: dict[str, int] = {}
            for _ts, credits, api, _gen in self.credits:
                if credits:
                    by_api[api] = by_api.get(api, 0) + credits
            return {"used_24h": self.used, "limit": self.config["credit_limit"],
                    "by_api": by_api, "calls_by_api": dict(self.calls_by_api)}

    def log_request(self, api: str, method: str, path: str, status: int, start: float,
                    end: float) -> None:
        with self.lock:
            self.calls_by_api[api] = self.calls_by_api.get(api, 0) + 1
            self.requests.append({"api": api, "method": method, "path": path, "status": status,
                                  "start": start, "end": end})

    # ---- records --------------------------------------------------------------------------
    def upsert(self, module: str, items: list[Any], dcf: list[str] | None) -> list[dict[str, Any]]:
        from zohosim.records import check_order, upsert_one

        store = self.stores[module]
        order = check_order(store.module, dcf)
        with self.lock:
            now = now_iso()
            out = [upsert_one(store, i, item, order, self.new_id, now)
                   for i, item in enumerate(items)]
            touched = [store.records[o["details"]["id"]] for o in out if o["status"] == "success"]
            self._save_records(module, touched)
        return out

    def delete_records(self, module: str, ids: list[str]) -> list[dict[str, Any]]:
        """Delete Records: one answer item per id, in order (an unknown id is not deleted)."""
        store = self.stores[module]
        out: list[dict[str, Any]] = []
        gone: list[str] = []
        with self.lock:
            for rid in ids:
                rec = store.records.get(rid)
                if rec is None:
                    out.append({"code": "INVALID_DATA", "details": {"id": rid},
                                "message": "record not deleted", "status": "error"})
                    continue
                for f in store.indexed:
                    store._unindex(f, rec)
                del store.records[rid]
                gone.append(rid)
                out.append({"code": "SUCCESS", "details": {"id": rid},
                            "message": "record deleted", "status": "success"})
            if self.persist is not None and gone:
                self.persist.delete_records(gone)
        return out

    # ---- uploads and jobs -----------------------------------------------------------------
    def add_upload(self, data: bytes) -> Upload:
        csvs = parse_upload(data)
        up = Upload(self.new_id(), now_iso(), data, csvs)
        with self.lock:
            self.uploads[up.file_id] = up
            if self.persist is not None:
                self.persist.save_upload(up)
        return up

    def running_jobs(self) -> int:
        """Bulk write jobs not yet finished (ADDED or IN PROGRESS)."""
        with self.lock:
            return sum(1 for j in self.jobs.values() if not j.finished)

    def create_job(self, body: Any, host_base: str) -> Job:
        with self.lock:
            limit = int(self.config["max_bulk_jobs"])
            if limit and self.running_jobs() >= limit:
                # the shape of Zoho's other limits (contract §7.4); not charged
                raise ApiError(429, "TOO_MANY_REQUESTS",
                               "You have reached the limit of bulk write jobs running at a time",
                               {})
            spec = validate_job(body, self.schema, self.uploads)
            job = Job(self.new_id(), body, spec, now_iso(), host_base)
            if self.fail_next > 0:
                self.fail_next -= 1
                job.fail = True
            self.jobs[job.id] = job
            if self.persist is not None:
                self.persist.save_job(job)
            upload = self.uploads[spec.file_id]
        upload.spill(self.files)  # the job holds the rows now: the upload keeps only its zip
        with self.lock:
            upload.drop()
        self.start_job(job)
        return job

    def start_job(self, job: Job) -> None:
        t = threading.Thread(target=self._run_job, args=(job, self.generation),
                             name=f"job-{job.id}", daemon=True)
        t.start()

    def _run_job(self, job: Job, generation: int) -> None:
        try:
            self._process(job, generation)
        except Exception:  # a bug must not kill the server; the job ends FAILED
            log.exception("job %s crashed", job.id)
            with self.lock:
                job.state = "FAILED"
        job.drop_rows()
        if self.generation == generation:
            self._send_callback(job)

    def _process(self, job: Job, generation: int) -> None:
        queue = float(self.config["job_queue_seconds"])
        if queue > 0:
            time.sleep(queue)
        store = self.stores[job.spec.module]
        compiled = compile_job(job.spec, store)
        rows = job.spec.csv.rows
        with self.lock:
            if self.generation != generation:
                return
            job.state = "IN_PROGRESS"
        if job.fail:
            with self.lock:
                job.state = "FAILED"
                if self.persist is not None:
                    self.persist.save_job(job)
            return
        result = ResultFile(job.spec)
        start = time.monotonic()
        i = 0
        prepared: Prepared | None = None
        while i < len(rows):
            rate = float(self.config["job_rows_per_second"])
            if rate > 0:
                chunk = max(1, int(rate / 10))
                due = start + (i + chunk) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            else:
                chunk = INSTANT_CHUNK
            if prepared is None or not prepared.start <= i < prepared.stop:
                # converted before the lock is taken: requests need not wait for it
                prepared = prepare_rows(job.spec, compiled, store, rows, i,
                                        min(i + chunk, len(rows)))
            with self.work:
                done = self._burst(job, generation, compiled, store, rows, i, i + chunk, result,
                                   prepared)
                if done < 0:
                    return
                # the requests that queued up during the burst go before the next one
                self.lock.step_aside(STEP_ASIDE_SECONDS)
            i += done
        data = result.zip_bytes()
        path = self.files / f"result-{job.id}.zip"
        path.write_bytes(data)
        with self.lock:
            if self.generation != generation:
                path.unlink(missing_ok=True)
                return
            job.result_name, job.result_path = result.name, path
            job.state = "COMPLETED"
            if self.persist is not None:
                self.persist.save_job(job)

    def _burst(self, job: Job, generation: int, compiled: Any, store: RecordStore,
               rows: list[list[str]], start: int, stop: int, result: ResultFile,
               prepared: Prepared | None = None) -> int:
        """Apply ``rows[start:stop]`` under one hold of the lock, or fewer once a call waits.

        ``prepared``: those rows converted already (it covers ``start``). Returns how many rows
        were applied; -1 when a reset came meanwhile.
        """
        lock = self.lock
        with lock:
            if self.generation != generation:
                return -1
            now = now_iso()
            new_id = self._next_id
            touched: list[str] | None = [] if self.persist is not None else None
            spec = job.spec
            stop = min(stop, len(rows))
            if prepared is not None and prepared.start == start and prepared.stop == stop \
                    and prepared.inserts_only(store):
                return self._insert_burst(job, store, prepared, result, now)
            early = start + YIELD_AFTER_ROWS
            for k in range(start, stop):
                if lock.waiting and k >= early:
                    stop = k
                    break
                row = rows[k]
                if prepared is None or prepared.bad(k):
                    res = process_row(spec, compiled, store, row, new_id, now)
                else:
                    res = apply_values(spec, compiled, store, prepared.values(k), None, new_id,
                                       now)
                result.add(row, res)
                if res.status == "ADDED":
                    job.added += 1
                elif res.status == "UPDATED":
                    job.updated += 1
                else:
                    job.skipped += 1
                if touched is not None and res.record_id:
                    touched.append(res.record_id)
            job.processed += stop - start
            if touched:
                self._save_records(job.spec.module,
                                   [store.records[r] for r in dict.fromkeys(touched)])
        return stop - start

    def _insert_burst(self, job: Job, store: RecordStore, prepared: Prepared,
                      result: ResultFile, now: str) -> int:
        """Every row of ``prepared`` inserts a record: all in one pass (the lock is held)."""
        n = prepared.stop - prepared.start
        ids = self._take_ids(n)
        store.insert_columns(ids, prepared.names, prepared.columns, prepared.index_keys, now)
        result.add_inserted(ids, prepared.cells)
        job.added += n
        job.processed += n
        if self.persist is not None:
            self._save_records(job.spec.module, [store.records[r] for r in ids])
        return n

    def _send_callback(self, job: Job) -> None:
        cb = job.spec.callback
        if not cb:
            return
        body = json.dumps(self.job_details(job, job.host_base)).encode()
        req = urllib.request.Request(cb["url"], data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=float(self.config["callback_timeout"])) as r:
                r.read()
        except Exception as exc:  # callbacks are best effort, as at Zoho
            log.warning("callback for job %s to %s failed: %s", job.id, cb["url"], exc)

    def download_path(self, job: Job) -> str:
        return f"/v8/crm/{self.zgid}/bulk-write/{job.id}/{job.id}.zip"

    def job_details(self, job: Job, host_base: str) -> dict[str, Any]:
        """GET /crm/bulk/v8/write/{id} body (§4.2, §4.3)."""
        inprog = self.config["status_spelling"]
        with self.lock:
            state = job.state
            spec = job.spec
            file: dict[str, Any]
            if state == "ADDED":
                top, res_status, code = "ADDED", inprog, "ADDED"
                file = {"status": inprog}
            else:
                top = {"IN_PROGRESS": inprog}.get(state, state)
                res_status = code = top
                file = {"status": top, "name": spec.csv.name, "added_count": job.added,
                        "skipped_count": job.skipped, "updated_count": job.updated,
                        "total_count": job.total}
            resource: dict[str, Any] = {
                "status": res_status,
                "type": "data",
                "module": {"id": self.schema.modules[spec.module].id, "api_name": spec.module},
                "field_mappings": [dict(m) for m in spec.echo_mappings],
                "file": file,
                "code": code,
            }
            if spec.find_by is not None:
                resource["find_by"] = spec.find_by
            out: dict[str, Any] = {
                "status": top,
                "character_encoding": spec.character_encoding or "UTF-8",
                "resource": [resource],
                "id": job.id,
                "created_by": dict(SIM_USER),
                "ignore_empty": spec.ignore_empty,
                "operation": spec.operation,
                "created_time": job.created_time,
            }
            if spec.callback:
                out["callback"] = dict(spec.callback)
            if state == "COMPLETED":
                path = self.download_path(job)
                url = path if self.config["download_url_style"] == "relative" else host_base + path
                out["result"] = {"download_url": url}
            return out

    def stats(self) -> dict[str, Any]:
        with self.lock:
            by_status: dict[str, int] = {}
            for j in self.jobs.values():
                by_status[j.state] = by_status.get(j.state, 0) + 1
            return {
                "records": {m: len(s.records) for m, s in self.stores.items()},
                "uploads": len(self.uploads),
                "jobs": {"total": len(self.jobs), "by_status": by_status},
                "tokens_issued": self.tokens_issued,
            }
