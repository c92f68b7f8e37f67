"""Bulk Read (export) jobs: ``POST /crm/bulk/v8/read``, job status, and the zipped CSV result.

As Zoho documents it (bulk-read overview, create job, job details, download result):

* the create body is ``{"callback": {"url", "method": "post"}, "query": {"module": {"api_name"},
  "fields": [...], "criteria": {...}, "page": n}}``; the answer is 201 with
  ``data[0].details = {id, operation: "read", state: "ADDED", created_by, created_time}``;
* a job runs ADDED -> IN PROGRESS -> COMPLETED (or FAILED); its details carry
  ``result = {page, count, download_url, per_page: 200000, more_records}``;
* one job exports at most 200,000 records (one *page*); the next page is a new job with
  ``query.page = n + 1``, so an export costs one job initialise (50 credits) per 200k records;
* the result is a zip holding ``<job id>.csv``: a header of field API names (``Id`` first), then
  one row per record, ordered by id; only 10 downloads a minute are allowed (429 above);
* the callback URL receives the job details by POST when the job ends.

Criteria: a single ``{"field": {"api_name"}, "comparator", "value"}`` (or v2's ``api_name``) or a
group ``{"group_operator": "and"|"or", "group": [...]}``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
import urllib.request
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zohosim.bulk import ApiError
from zohosim.records import SIM_USER

if TYPE_CHECKING:
    from zohosim.state import State

log = logging.getLogger("zohosim")

PER_PAGE = 200_000
DOWNLOADS_PER_MINUTE = 10
MAX_CRITERIA = 25
COMPARATORS = ("equal", "not_equal", "in", "not_in", "less_than", "less_equal", "greater_than",
               "greater_equal", "contains", "not_contains", "starts_with", "ends_with",
               "between", "not_between")
SYSTEM_COLUMNS = ("Created_Time", "Modified_Time", "Created_By", "Modified_By", "Owner")

Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class ReadJob:
    """One export job and, once it ran, its result."""

    id: str
    module: str
    fields: list[str]
    criteria: Any
    page: int
    created_time: str
    host_base: str
    callback: dict[str, str] | None = None
    state: str = "ADDED"
    count: int = 0
    more_records: bool = False
    result_zip: bytes | None = None
    predicate: Predicate = field(default=lambda r: True, repr=False)


def _bad(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, code, message, details)


def _cell(value: Any) -> str:
    """A stored record value as Zoho writes it into a bulk-read CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # Owner / Created_By / Modified_By / lookups: their id
        return str(value.get("id", ""))
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return str(value.get("id", ""))
    if isinstance(value, str):
        return value.casefold()
    return value


def _leaf(spec: dict[str, Any], fields: dict[str, Any], path: str) -> Predicate:
    fld = spec.get("field")
    name = fld.get("api_name") if isinstance(fld, dict) else spec.get("api_name")
    if not isinstance(name, str) or not name:
        raise _bad("INVALID_CRITERIA", "invalid criteria", json_path=f"{path}.field")
    if name not in fields and name not in ("id", *SYSTEM_COLUMNS):
        raise _bad("FIELD_IN_CRITERIA_NOT_AVAILABLE", "field in criteria is not available",
                   api_name=name, json_path=f"{path}.field")
    comparator = spec.get("comparator")
    if comparator not in COMPARATORS:
        raise _bad("FIELD_COMPARATOR_IN_CRITERIA_NOT_SUPPORTED",
                   "comparator in criteria is not supported", api_name=name,
                   json_path=f"{path}.comparator")
    if "value" not in spec:
        raise _bad("INVALID_CRITERIA", "invalid criteria", json_path=f"{path}.value")
    value = spec["value"]
    many = comparator in ("in", "not_in", "between", "not_between")
    if many and not isinstance(value, list):
        raise _bad("VALUE_IN_CRITERIA_NOT_SUPPORTED", "value in criteria is not supported",
                   api_name=name, json_path=f"{path}.value")
    if comparator in ("between", "not_between") and len(value) != 2:
        raise _bad("VALUE_IN_CRITERIA_NOT_SUPPORTED", "value in criteria is not supported",
                   api_name=name, json_path=f"{path}.value")
    want = [_comparable(v) for v in value] if many else _comparable(value)

    def test(record: dict[str, Any]) -> bool:
        got = _comparable(record.get(name))
        if comparator == "equal":
            return bool(got == want)
        if comparator == "not_equal":
            return bool(got != want)
        if comparator == "in":
            return got in want
        if comparator == "not_in":
            return got not in want
        if got is None:
            return False
        try:
            if comparator == "less_than":
                return bool(got < want)
            if comparator == "less_equal":
                return bool(got <= want)
            if comparator == "greater_than":
                return bool(got > want)
            if comparator == "greater_equal":
                return bool(got >= want)
            if comparator == "between":
                return bool(want[0] <= got <= want[1])
            if comparator == "not_between":
                return not want[0] <= got <= want[1]
        except TypeError:
            return False
        text, needle = str(got), str(want)
        if comparator == "contains":
            return needle in text
        if comparator == "not_contains":
            return needle not in text
        if comparator == "starts_with":
            return text.startswith(needle)
        return text.endswith(needle)  # ends_with

    return test


def compile_criteria(spec: Any, fields: dict[str, Any], path: str = "$.query.criteria",
                     depth: list[int] | None = None) -> Predicate:
    """A record predicate from a bulk-read criteria object; ApiError names what is wrong."""
    depth = depth if depth is not None else [0]
    if not isinstance(spec, dict):
        raise _bad("INVALID_CRITERIA", "invalid criteria", json_path=path)
    depth[0] += 1
    if depth[0] > MAX_CRITERIA:
        raise _bad("CRITERIA_LIMIT_EXCEEDED", "criteria limit exceeded", limit=MAX_CRITERIA)
    if "group" not in spec:
        return _leaf(spec, fields, path)
    operator = spec.get("group_operator")
    group = spec.get("group")
    if operator not in ("and", "or"):
        raise _bad("GROUP_OPERATOR_NOT_SUPPORTED", "group operator is not supported",
                   json_path=f"{path}.group_operator")
    if not isinstance(group, list) or not group:
        raise _bad("AMBIGUOUS_GROUP_IN_CRITERIA", "ambiguous group in criteria",
                   json_path=f"{path}.group")
    parts = [compile_criteria(g, fields, f"{path}.group[{i}]", depth)
             for i, g in enumerate(group)]
    if operator == "and":
        return lambda r: all(p(r) for p in parts)
    return lambda r: any(p(r) for p in parts)


def render_zip(job: ReadJob, records: list[dict[str, Any]]) -> bytes:
    """The result zip: ``<job id>.csv`` with ``Id`` then the requested fields."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = ["Id", *[f for f in job.fields if f != "id"]]
    w.writerow(columns)
    for r in records:
        w.writerow([_cell(r.get("id" if c == "Id" else c)) for c in columns])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{job.id}.csv", buf.getvalue())
    return out.getvalue()


class BulkReads:
    """Every bulk-read job of the org, the download throttle, and the job runner."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.jobs: dict[str, ReadJob] = {}
        self.downloads: deque[float] = deque()
        self.per_page = PER_PAGE
        self.generation = state.generation

    def _fresh(self) -> None:
        """Forget jobs from before a sim reset (the org they read no longer exists)."""
        if self.generation != self.state.generation:
            self.jobs.clear()
            self.downloads.clear()
            self.per_page = PER_PAGE
            self.generation = self.state.generation

    def set_per_page(self, per_page: int) -> int:
        """Records per page (Zoho: 200,000); tests lower it to page cheaply."""
        if per_page < 1:
            raise ValueError("per_page must be at least 1")
        with self.state.lock:
            self._fresh()
            self.per_page = per_page
        return per_page

    # ---- create -----------------------------------------------------------------------
    def create(self, payload: Any, host_base: str) -> dict[str, Any]:
        """Validate a create body, start the job; the 201 body."""
        st = self.state
        if payload is ValueError:
            raise _bad("INVALID_DATA", "the request body is not a valid JSON")
        if not payload:
            raise _bad("REQUEST_BODY_IS_EMPTY", "request body is empty")
        if not isinstance(payload, dict):
            raise _bad("INVALID_DATA", "invalid data", expected_data_type="jsonobject")
        query = payload.get("query")
        if not isinstance(query, dict):
            raise _bad("MANDATORY_NOT_FOUND", "required field not found", api_name="query",
                       json_path="$.query")
        mod = query.get("module")
        name = mod.get("api_name") if isinstance(mod, dict) else mod
        if not name:
            raise _bad("MANDATORY_NOT_FOUND", "required field not found", api_name="module",
                       json_path="$.query.module")
        module = st.schema.module(str(name))
        if module is None:
            raise _bad("INVALID_MODULE", "the module name given seems to be invalid",
                       api_name="module", json_path="$.query.module")
        fields = query.get("fields")
        if fields is None or fields == []:
            fields = [f for f in module.fields if f not in SYSTEM_COLUMNS]
            fields += [c for c in SYSTEM_COLUMNS]
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise _bad("INVALID_DATA", "invalid data", api_name="fields",
                       json_path="$.query.fields", expected_data_type="jsonarray")
        for i, f in enumerate(fields):
            if f not in module.fields and f not in ("id", "Id", *SYSTEM_COLUMNS):
                raise _bad("FIELD_NOT_AVAILABLE", "field is not available", api_name=f,
                           json_path=f"$.query.fields[{i}]")
        page = query.get("page", 1)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise _bad("INVALID_DATA", "invalid data", api_name="page",
                       json_path="$.query.page")
        criteria = query.get("criteria")
        predicate: Predicate = (compile_criteria(criteria, module.fields)
                                if criteria is not None else (lambda r: True))
        callback = payload.get("callback")
        if callback is not None:
            if not isinstance(callback, dict) or not str(callback.get("url", "")).startswith(
                    ("http://", "https://")):
                raise _bad("INVALID_CALLBACK_URL", "invalid callback url",
                           api_name="url", json_path="$.callback.url")
            if str(callback.get("method", "")).lower() != "post":
                raise _bad("INVALID_CALLBACK_METHOD", "invalid callback method",
                           api_name="method", json_path="$.callback.method")
        job = ReadJob(st.new_id(), module.api_name, [f if f != "Id" else "id" for f in fields],
                      criteria, page, _now(), host_base, callback, predicate=predicate)
        with st.lock:
            self._fresh()
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, st.generation), name=f"read-{job.id}",
                         daemon=True).start()
        return {"data": [{"status": "success", "code": "ADDED_SUCCESSFULLY",
                          "message": "Added successfully.",
                          "details": {"id": job.id, "operation": "read", "state": "ADDED",
                                      "created_by": dict(SIM_USER),
                                      "created_time": job.created_time}}],
                "info": {}}

    def _run(self, job: ReadJob, generation: int) -> None:
        st = self.state
        try:
            queue = float(st.config["job_queue_seconds"])
            if queue > 0:
                time.sleep(queue)
            with st.lock:
                job.state = "IN PROGRESS"
                store = st.stores[job.module]
                hits = [dict(r) for r in store.records.values() if job.predicate(r)]
            hits.sort(key=lambda r: int(r["id"]))
            per = self.per_page
            start = (job.page - 1) * per
            chunk = hits[start:start + per]
            data = render_zip(job, chunk)
            with st.lock:
                if st.generation != generation:
                    return
                job.result_zip, job.count = data, len(chunk)
                job.more_records = start + per < len(hits)
                job.state = "COMPLETED"
        except Exception:  # a bug must not kill the server; the job ends FAILED
            log.exception("bulk read job %s crashed", job.id)
            with st.lock:
                job.state = "FAILED"
        self._callback(job)

    def _callback(self, job: ReadJob) -> None:
        if not job.callback:
            return
        body = json.dumps(self.details_body(job)).encode()
        req = urllib.request.Request(job.callback["url"], data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=float(self.state.config[
                    "callback_timeout"])) as r:
                r.read()
        except Exception as exc:  # callbacks are best effort, as at Zoho
            log.warning("callback for read job %s to %s failed: %s", job.id,
                        job.callback["url"], exc)

    # ---- status and result ------------------------------------------------------------
    def find(self, job_id: str) -> ReadJob:
        with self.state.lock:
            self._fresh()
            job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "RESOURCE_NOT_FOUND", "The requested resource doesn't exist.",
                           {"resource_path_index": 0})
        return job

    def details_body(self, job: ReadJob) -> dict[str, Any]:
        """``GET /crm/bulk/v8/read/{id}``: the job's details."""
        query: dict[str, Any] = {"module": {"api_name": job.module,
                                            "id": self.state.schema.modules[job.module].id},
                                 "page": job.page,
                                 "fields": [f for f in job.fields]}
        if job.criteria is not None:
            query["criteria"] = job.criteria
        state = job.state
        if state == "IN PROGRESS" and self.state.config["status_spelling"] == "INPROGRESS":
            state = "INPROGRESS"
        detail: dict[str, Any] = {"id": job.id, "operation": "read", "state": state,
                                  "query": query, "created_by": dict(SIM_USER),
                                  "created_time": job.created_time, "file_type": "csv"}
        if job.state == "COMPLETED":
            detail["result"] = {"page": job.page, "count": job.count,
                                "download_url": f"/crm/bulk/v8/read/{job.id}/result",
                                "per_page": self.per_page, "more_records": job.more_records}
        if job.callback:
            detail["callback"] = job.callback
        return {"data": [detail]}

    def download(self, job: ReadJob) -> bytes:
        """The result zip, at most 10 downloads a minute (429 above, uncharged)."""
        if job.result_zip is None:
            raise ApiError(400, "INVALID_REQUEST", "the job is not completed yet",
                           {"state": job.state})
        now = time.time()
        with self.state.lock:
            while self.downloads and self.downloads[0] < now - 60:
                self.downloads.popleft()
            if len(self.downloads) >= DOWNLOADS_PER_MINUTE:
                raise ApiError(429, "TOO_MANY_REQUESTS",
                               "only 10 downloads are allowed per minute",
                               {"limit": DOWNLOADS_PER_MINUTE})
            self.downloads.append(now)
        return job.result_zip


def _now() -> str:
    from zohosim.state import now_iso

    return now_iso()
