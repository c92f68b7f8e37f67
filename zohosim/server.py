"""The HTTP face of the simulator: routing, auth, limits, faults, and the admin API."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from zohosim.bulk import MAX_UPLOAD_BYTES, ApiError, is_zip
from zohosim.bulkread import BulkReads
from zohosim.records import RecordStore
from zohosim.search import CriteriaError, parse_criteria
from zohosim.state import API_NAMES, State, now_iso
from zohosim.useredits import user_edit

log = logging.getLogger("zohosim")

JSON = "application/json"
RECORD_PATH = re.compile(r"^/crm/v8/([A-Za-z0-9_]+)(?:/([^/]+))?$")
JOB_PATH = re.compile(r"^/crm/bulk/v8/write/([^/]+)$")
READ_JOB_PATH = re.compile(r"^/crm/bulk/v8/read/([^/]+)$")
READ_RESULT_PATH = re.compile(r"^/crm/bulk/v8/read/([^/]+)/result$")
DOWNLOAD_PATH = re.compile(r"^/v8/crm/([^/]+)/bulk-write/([^/]+)/([^/]+)\.zip$")
RESERVED = {"org", "users", "settings", "upload", "bulk"}


def _encode_page_token(offset: int, generation: int) -> str:
    raw = f"zohosim:{generation}:{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str, generation: int) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        tag, gen, offset = raw.split(":")
        if tag != "zohosim" or int(gen) != generation or int(offset) < 0:
            raise ValueError(raw)
        return int(offset)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "INVALID_DATA", "invalid data", {"param_name": "page_token"}) from None


class Reply:
    """What a handler answers: status, body bytes, headers, and whether credits are charged."""

    def __init__(self, status: int, body: Any = None, *, content_type: str = JSON,
                 headers: dict[str, str] | None = None, charge: bool | None = None) -> None:
        self.status = status
        if body is None:
            self.data = b""
        elif isinstance(body, bytes):
            self.data = body
        else:
            self.data = json.dumps(body).encode()
        self.content_type = content_type if body is not None else ""
        self.headers = headers or {}
        self.charge = status < 400 if charge is None else charge


def error_reply(err: ApiError, charge: bool = False) -> Reply:
    return Reply(err.status, err.body(), charge=charge)


def items_reply(items: list[dict[str, Any]]) -> Reply:
    """A per-record answer (upsert, delete): 200 all ok, 207 mixed, 400 none; charged."""
    ok = sum(1 for it in items if it["status"] == "success")
    status = 200 if ok == len(items) else (400 if ok == 0 else 207)
    return Reply(status, {"data": items}, charge=True)


def _info(page: int, per_page: int, count: int, more: bool) -> dict[str, Any]:
    return {"per_page": per_page, "count": count, "page": page, "more_records": more}


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        return {}
    boundary = b"--" + m.group(1).encode()
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disp = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                disp = line
        nm = re.search(r'\bname="([^"]*)"', disp)
        fn = re.search(r'\bfilename="([^"]*)"', disp)
        if nm:
            out[nm.group(1)] = (fn.group(1) if fn else None, data)
    return out


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.reads = BulkReads(state)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive connections
    server: SimServer
    def version_string(self) -> str:
        return "ZGS"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    # ---- plumbing -----------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.server.state

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _read_body(self, limit: int | None = None) -> bytes | None:
        """The request body; None (after draining) when it is larger than ``limit``."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
            return None if limit is not None and len(body) > limit else body
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None and length > limit:
            left = length
            while left > 0:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
            return None
        return self.rfile.read(length) if length else b""

    def _host_base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.state.base_url

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.data)))
        # headers and body in one write
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
        buffer.append(b"\r\n")
        if reply.data and self.command != "HEAD":
            buffer.append(reply.data)
        self.flush_headers()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = re.sub(r"/{2,}", "/", url.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if path.startswith("/__sim/"):
            body = self._read_body()
            try:
                self._send(self._admin(method, path, body or b"", query))
            except (ValueError, TypeError, KeyError) as exc:
                self._send(Reply(400, {"error": str(exc)}))
            return
        api = self._api_name(method, path)
        is_upload = api == "upload"
        # the multipart envelope may add a little to a file of exactly the limit
        body = self._read_body(MAX_UPLOAD_BYTES + (1 << 20) if is_upload else None)
        start = time.time()
        reply: Reply | None = None
        self.state.lock.call_started()  # a running job's next burst waits for this answer
        try:
            reply = self._serve(api, method, path, query, body)
        finally:
            self.state.lock.call_ended()
            # logged before answering, so a client that saw the answer also sees the log entry
            if api is not None:
                self.state.log_request(api, method, path, reply.status if reply else 0, start,
                                       time.time())
        if reply is None:
            self._drop()
        else:
            self._send(reply)

    def _api_name(self, method: str, path: str) -> str | None:
        if path in ("/oauth/v2/token", "/oauth/v2/token/revoke"):
            return "token"
        if path == "/crm/v8/org":
            return "org"
        if path == "/crm/v8/users":
            return "users"
        if path == "/crm/v8/settings/fields":
            return "fields"
        if path == "/crm/v8/settings/modules" or path.startswith("/crm/v8/settings/modules/"):
            return "modules"
        if path == "/crm/v8/upload":
            return "upload"
        if path == "/crm/bulk/v8/write":
            return "bulk_create"
        if JOB_PATH.match(path):
            return "bulk_get"
        if path == "/crm/bulk/v8/read":
            return "bulk_read_create"
        if READ_JOB_PATH.match(path):
            return "bulk_read_get"
        if READ_RESULT_PATH.match(path):
            return "bulk_read_download"
        if DOWNLOAD_PATH.match(path):
            return "download"
        m = RECORD_PATH.match(path)
        if m and m.group(1) not in RESERVED:
            if method == "DELETE" and not m.group(2):
                return "delete"  # Delete Records: DELETE /crm/v8/{module}?ids=…
            return {"upsert": "upsert", "search": "search"}.get(m.group(2) or "", "records_get")
        return None

    def _echo(self, api: str, status: int, method: str, path: str, query: dict[str, str],
              body: bytes | None) -> Reply:
        """An error answer that repeats the whole request (faults ``401-echo`` / ``500-echo``)."""
        text = (body or b"")[:4096].decode("utf-8", "replace")
        seen = (f"{method} {path}?{urllib.parse.urlencode(query)} "
                f"Authorization: {self.headers.get('Authorization', '')} body: {text}")
        if api == "token":  # the accounts server's error shape
            return Reply(status, {"error": "invalid_client", "error_description": seen})
        code = "INVALID_TOKEN" if status == 401 else "INTERNAL_ERROR"
        return Reply(status, {"code": code, "message": f"request refused: {seen}",
                              "details": {"headers": dict(self.headers.items()),
                                          "query": query, "body": text},
                              "status": "error"})

    # ---- the API pipeline: faults, auth, limits, latency, handler ------------------------
    def _serve(self, api: str | None, method: str, path: str, query: dict[str, str],
               body: bytes | None) -> Reply | None:
        st = self.state
        if api is None:
            return Reply(404, {"code": "INVALID_URL_PATTERN", "details": {},
                               "message": "Please check if the URL trying to access is a "
                                          "correct one", "status": "error"})
        fault = st.take_fault(api)
        stall = 0.0
        if fault is not None:
            if fault.kind == "drop":
                return None
            if fault.kind == "stall":
                stall = fault.seconds  # spent inside the concurrency slot, like a slow call
            elif fault.kind == "500":
                return Reply(500, {"code": "INTERNAL_ERROR", "details": {},
                                   "message": "Internal Server Error", "status": "error"})
            elif fault.kind == "503":
                return Reply(503, {"code": "SERVICE_UNAVAILABLE", "details": {},
                                   "message": "Service temporarily unavailable",
                                   "status": "error"})
            elif fault.kind == "429":
                return Reply(429, {"code": "TOO_MANY_REQUESTS", "details": {},
                                   "message": "You have reached the concurrency limit",
                                   "status": "error"})
            elif fault.kind.endswith("-echo"):
                return self._echo(api, int(fault.kind[:3]), method, path, query, body)
        if api == "token":
            time.sleep(stall)
            if method != "POST":
                return Reply(200, {"error": "invalid_request"})
            params = dict(query)
            ctype = self.headers.get("Content-Type", "")
            if body and "json" not in ctype:
                params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                     keep_blank_values=True))
            if path.endswith("/revoke"):
                return Reply(200, st.revoke(params.get("token")))
            return Reply(200, st.grant(params, self._host_base()))
        expected = "POST" if api in ("upsert", "upload", "bulk_create",
                                     "bulk_read_create") else "GET"
        if api == "delete":
            expected = "DELETE"
        if method != expected:
            return Reply(400, {"code": "INVALID_REQUEST_METHOD", "details": {},
                               "message": "The http request method type is not a valid one",
                               "status": "error"})
        err = st.check_token(self.headers.get("Authorization"))
        if err is not None:
            time.sleep(stall)
            return error_reply(err)
        payload: Any = None
        records = 0
        if api in ("upsert", "bulk_create", "bulk_read_create") and body is not None:
            try:
                payload = json.loads(body.decode("utf-8")) if body else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                payload = ValueError
            if api == "upsert" and isinstance(payload, dict) and isinstance(payload.get("data"),
                                                                             list):
                records = len(payload["data"])
        if api == "delete":
            records = len([i for i in query.get("ids", "").split(",") if i.strip()])
        # the "complex API" group (§7.3): big upserts, and record reads sorted with sort_by
        sub = (api == "upsert" and records > int(st.config["sub_concurrency_threshold"])) or (
            api == "records_get" and bool(query.get("sort_by")))
        cost = st.cost(api, records)
        refusal, entry = st.admit(api, sub, cost)
        if refusal is not None or entry is None:
            refused = Reply(429, {"code": "TOO_MANY_REQUESTS", "details": {}, "message": refusal,
                                  "status": "error"}, charge=False)
            remaining = st.credits_remaining_header()
            if remaining is not None:
                refused.headers["X-API-CREDITS-REMAINING"] = remaining
            return refused
        reply = Reply(500, {"code": "INTERNAL_ERROR", "details": {},
                            "message": "Internal Server Error", "status": "error"})
        try:
            latency = float(st.config["latency_ms"]) / 1000 + stall
            if latency > 0:
                time.sleep(latency)
            reply = self._handle(api, path, query, body, payload)
        except ApiError as exc:
            reply = error_reply(exc)
        except Exception:
            log.exception("handler for %s %s failed", method, path)
        finally:
            st.release(sub, entry, reply.charge)
        remaining = st.credits_remaining_header()
        if remaining is not None:
            reply.headers["X-API-CREDITS-REMAINING"] = remaining
        return reply

    def _handle(self, api: str, path: str, query: dict[str, str], body: bytes | None,
                payload: Any) -> Reply:
        st = self.state
        if api == "org":
            return Reply(200, self._org())
        if api == "users":
            return Reply(200, self._users())
        if api == "fields":
            name = query.get("module")
            if not name:
                raise ApiError(400, "REQUIRED_PARAM_MISSING",
                               "One of the expected parameter is missing",
                               {"param_name": "module"})
            module = st.schema.module(name)
            if module is None:
                raise ApiError(400, "INVALID_MODULE", "the module name given seems to be invalid",
                               {"param_name": "module"})
            return Reply(200, {"fields": module.fields_metadata()})
        if api == "modules":
            name = path[len("/crm/v8/settings/modules"):].strip("/")
            mods = [m for m in st.schema.modules.values() if not name or m.api_name == name]
            if not mods:
                raise ApiError(400, "INVALID_MODULE", "the module name given seems to be invalid",
                               {"resource_path_index": 0})
            if self.headers.get("If-Modified-Since"):
                return Reply(304)  # the schema never changes while we run
            return Reply(200, {"modules": [{
                "api_name": m.api_name, "module_name": m.api_name, "id": m.id,
                "singular_label": m.singular_label, "plural_label": m.plural_label,
                "api_supported": True, "generated_type": "custom", "creatable": True,
                "editable": True, "deletable": True, "viewable": True, "visible": True,
            } for m in mods]})
        if api in ("records_get", "search"):
            return self._records_get(path, query)
        if api == "upsert":
            return self._upsert(path, payload)
        if api == "delete":
            return self._delete(path, query)
        if api == "upload":
            try:
                return self._upload(body)
            except ApiError as exc:
                if exc.status == 400 and st.config["upload_errors_http_200"]:
                    return Reply(200, exc.body(), charge=False)
                raise
        if api == "bulk_create":
            if payload is ValueError or payload is None:
                raise ApiError(400, "INVALID_DATA", "the request body is not a valid JSON", {})
            job = st.create_job(payload, self._host_base())
            return Reply(201, {"status": "success", "code": "SUCCESS", "message": "success",
                               "details": {"id": job.id, "created_by": {
                                   "id": "5725767000000225013", "name": "Patricia Boyle"}}})
        if api == "bulk_get":
            m = JOB_PATH.match(path)
            assert m is not None
            found = st.jobs.get(m.group(1))
            if found is None:
                raise ApiError(404, "RESOURCE_NOT_FOUND", "The requested resource doesn't exist.")
            return Reply(200, st.job_details(found, self._host_base()))
        if api == "download":
            m = DOWNLOAD_PATH.match(path)
            assert m is not None
            done = st.jobs.get(m.group(2))
            result = done.result_zip() if done is not None else None
            if done is None or result is None or m.group(1) != st.zgid:
                raise ApiError(404, "RESOURCE_NOT_FOUND", "The requested resource doesn't exist.")
            return Reply(200, result, content_type="application/zip",
                         headers={"Content-Disposition": f'attachment; filename="{done.id}.zip"'})
        if api.startswith("bulk_read_"):
            return self._bulk_read(api, path, payload)
        raise ApiError(404, "INVALID_URL_PATTERN",
                       "Please check if the URL trying to access is a correct one")

    def _bulk_read(self, api: str, path: str, payload: Any) -> Reply:
        """Bulk Read: create a job, its details, its zipped CSV (see zohosim/bulkread.py)."""
        reads = self.server.reads
        if api == "bulk_read_create":
            return Reply(201, reads.create(payload, self._host_base()))
        m = READ_RESULT_PATH.match(path) or READ_JOB_PATH.match(path)
        assert m is not None
        job = reads.find(m.group(1))
        if api == "bulk_read_get":
            return Reply(200, reads.details_body(job))
        return Reply(200, reads.download(job), content_type="application/zip",
                     headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'})

    def _org(self) -> dict[str, Any]:
        st = self.state
        return {"org": [{
            "id": st.org_id,
            "zgid": st.zgid,
            "company_name": "zohosim Orders Inc.",
            "alias": None,
            "primary_email": "patricia.boyle@zohosim.example",
            "primary_zuid": "74822956",
            "domain_name": f"org{st.zgid}",
            "country_code": "US",
            "country": "United States",
            "time_zone": st.config["time_zone"] or "UTC",
            "iso_code": "USD",
            "currency_symbol": "$",
            "currency_locale": "en_US",
            "currency": "US Dollar - USD",
            "type": "production",
            "mc_status": False,
            "gapps_enabled": False,
            "privacy_settings": False,
            "hipaa_compliance_enabled": False,
            "license_details": {
                "paid": True, "paid_type": "enterprise", "paid_expiry": None,
                "trial_type": None, "trial_expiry": None, "users_license_purchased": 10,
                "trial_action": None,
            },
        }]}

    def _users(self) -> dict[str, Any]:
        return {
            "users": [{
                "id": "5725767000000225013",
                "full_name": "Patricia Boyle",
                "first_name": "Patricia",
                "last_name": "Boyle",
                "email": "patricia.boyle@zohosim.example",
                "zuid": "74822956",
                "status": "active",
                "confirm": True,
                "time_zone": self.state.config["time_zone"] or "UTC",
                "locale": "en_US",
                "language": "en_US",
                "country": "US",
                "role": {"name": "CEO", "id": "5725767000000015969"},
                "profile": {"name": "Administrator", "id": "5725767000000015972"},
            }],
            "info": _info(1, 200, 1, False),
        }

    def _records_module(self, path: str) -> tuple[re.Match[str], Any]:
        """The records path's match and its module; ``INVALID_MODULE`` when there is none."""
        m = RECORD_PATH.match(path)
        assert m is not None
        module = self.state.schema.module(m.group(1))
        if module is None:
            raise ApiError(400, "INVALID_MODULE", "the module name given seems to be invalid",
                           {"resource_path_index": 0})
        return m, module

    def _records_get(self, path: str, query: dict[str, str]) -> Reply:
        st = self.state
        m, module = self._records_module(path)
        store = st.stores[module.api_name]
        wanted = [f.strip() for f in query.get("fields", "").split(",") if f.strip()]
        if m.group(2) == "search":
            return self._search(store, query, wanted)
        if m.group(2) is not None:
            with st.lock:
                rec = store.records.get(m.group(2))
                rec = dict(rec) if rec is not None else None
            if rec is None:
                return Reply(204)
            if wanted:
                rec = {k: v for k, v in rec.items() if k in wanted or k == "id"}
            return Reply(200, {"data": [rec]})
        if not wanted:
            raise ApiError(400, "REQUIRED_PARAM_MISSING",
                           "One of the expected parameter is missing", {"param_name": "fields"})
        bad = [f for f in wanted if f != "id" and f not in module.fields]
        if bad:
            raise ApiError(400, "INVALID_DATA", "invalid data",
                           {"api_name": bad[0], "param_name": "fields"})
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "200"))
        except ValueError:
            raise ApiError(400, "INVALID_DATA", "invalid data",
                           {"param_name": "page"}) from None
        if page < 1 or not 1 <= per_page <= 200:
            raise ApiError(400, "INVALID_DATA", "invalid data",
                           {"param_name": "per_page" if page >= 1 else "page"})
        start = (page - 1) * per_page
        token = query.get("page_token")
        if token:
            start = _decode_page_token(token, st.generation)
        elif start >= int(st.config["page_limit"]):
            raise ApiError(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                           f"You can only get the first {st.config['page_limit']} records "
                           "without using page_token param", {})
        sort_by = query.get("sort_by") or "id"
        sort_order = query.get("sort_order") or "asc"
        if sort_by not in ("id", "Created_Time", "Modified_Time"):
            raise ApiError(400, "INVALID_DATA", "invalid data",
                           {"param_name": "sort_by", "supported_values": [
                               "id", "Created_Time", "Modified_Time"]})
        if sort_order not in ("asc", "desc"):
            raise ApiError(400, "INVALID_DATA", "invalid data", {"param_name": "sort_order"})
        with st.lock:
            if query.get("ids"):
                ids = [i for i in dict.fromkeys(query["ids"].split(",")) if i in store.records]
            else:
                ids = list(store.records)
            if sort_by != "id" or sort_order != "asc":
                recs = store.records
                ids.sort(key=lambda i: (str(recs[i].get(sort_by, "")), int(i))
                         if sort_by != "id" else int(i), reverse=sort_order == "desc")
            chunk = [dict(store.records[i]) for i in ids[start: start + per_page]]
        if not chunk:
            return Reply(204)
        data = [{k: v for k, v in r.items() if k in wanted or k == "id"} for r in chunk]
        more = start + per_page < len(ids)
        info = _info(page, per_page, len(data), more)
        info["next_page_token"] = (_encode_page_token(start + per_page, st.generation)
                                   if more else None)
        info["previous_page_token"] = None
        info["page_token_expiry"] = None
        if more:
            expiry = datetime.now(UTC) + timedelta(days=1)
            info["page_token_expiry"] = expiry.replace(microsecond=0).isoformat()
        info["sort_by"] = sort_by
        info["sort_order"] = sort_order
        return Reply(200, {"data": data, "info": info})

    def _search(self, store: RecordStore, query: dict[str, str], wanted: list[str]) -> Reply:
        """``GET /crm/v8/{module}/search?criteria=...`` (also ``email=`` / ``word=``)."""
        st = self.state
        if query.get("criteria"):
            try:
                pred = parse_criteria(query["criteria"])
            except CriteriaError:
                raise ApiError(400, "INVALID_QUERY", "invalid query formed",
                               {"reason": "invalid criteria", "param_name": "criteria"}) from None
        elif query.get("email"):
            email = query["email"].casefold()
            emails = [n for n, f in store.module.fields.items() if f.data_type == "email"]

            def pred(r: dict[str, Any]) -> bool:
                return any(str(r.get(n, "")).casefold() == email for n in emails)
        elif query.get("word"):
            word = query["word"].casefold()

            def pred(r: dict[str, Any]) -> bool:
                return any(isinstance(v, str) and word in v.casefold() for v in r.values())
        else:
            raise ApiError(400, "REQUIRED_PARAM_MISSING",
                           "One of the expected parameter is missing",
                           {"param_name": "criteria"})
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "200"))
        except ValueError:
            raise ApiError(400, "INVALID_DATA", "invalid data", {"param_name": "page"}) from None
        if page < 1 or not 1 <= per_page <= 200:
            raise ApiError(400, "INVALID_DATA", "invalid data", {"param_name": "per_page"})
        with st.lock:
            hits = [dict(r) for r in store.records.values() if pred(r)]
        chunk = hits[(page - 1) * per_page: page * per_page]
        if not chunk:
            return Reply(204)
        if wanted:
            chunk = [{k: v for k, v in r.items() if k in wanted or k == "id"} for r in chunk]
        more = page * per_page < len(hits)
        return Reply(200, {"data": chunk, "info": _info(page, per_page, len(chunk), more)})

    def _upsert(self, path: str, payload: Any) -> Reply:
        st = self.state
        m = RECORD_PATH.match(path)
        assert m is not None
        module = st.schema.module(m.group(1))
        if module is None:
            return Reply(400, {"data": [{"code": "INVALID_MODULE",
                                         "details": {"resource_path_index": 0},
                                         "message": "the module name given seems to be invalid",
                                         "status": "error"}]})
        if payload is ValueError or not isinstance(payload, dict):
            raise ApiError(400, "INVALID_DATA", "the request body is not a valid JSON", {})
        data = payload.get("data")
        if data is None:
            raise ApiError(400, "MANDATORY_NOT_FOUND", "required field not found",
                           {"api_name": "data", "json_path": "$.data"})
        if not isinstance(data, list) or not data:
            raise ApiError(400, "INVALID_DATA", "invalid data",
                           {"api_name": "data", "json_path": "$.data",
                            "expected_data_type": "jsonarray"})
        if len(data) > 100:
            raise ApiError(400, "LIMIT_EXCEEDED",
                           "the number of records in the request exceeds the limit",
                           {"limit": 100, "api_name": "data", "json_path": "$.data"})
        dcf = payload.get("duplicate_check_fields")
        if dcf is not None:
            if not isinstance(dcf, list):
                raise ApiError(400, "INVALID_DATA", "invalid data",
                               {"api_name": "duplicate_check_fields",
                                "json_path": "$.duplicate_check_fields",
                                "expected_data_type": "jsonarray"})
            for i, name in enumerate(dcf):
                f = module.fields.get(name) if isinstance(name, str) else None
                if f is None or not (f.unique or name == module.system_duplicate_field):
                    raise ApiError(400, "INVALID_DATA",
                                   "the field is not a duplicate check field",
                                   {"api_name": str(name),
                                    "json_path": f"$.duplicate_check_fields[{i}]"})
        items = st.upsert(module.api_name, data, dcf)
        return items_reply(items)

    def _delete(self, path: str, query: dict[str, str]) -> Reply:
        """Delete Records: up to 100 ``ids`` a call, one item per id, in request order.

        An id that is not (or no longer) a record of the module answers ``INVALID_DATA``
        "record not deleted" for that id; the others are deleted (moved to the recycle bin).
        """
        st = self.state
        _, module = self._records_module(path)
        ids = [i.strip() for i in query.get("ids", "").split(",") if i.strip()]
        if not ids:
            raise ApiError(400, "REQUIRED_PARAM_MISSING",
                           "One of the expected parameter is missing", {"param_name": "ids"})
        if len(ids) > 100:
            raise ApiError(400, "LIMIT_EXCEEDED",
                           "the number of records in the request exceeds the limit",
                           {"limit": 100, "param_name": "ids"})
        items = st.delete_records(module.api_name, ids)
        return items_reply(items)

    def _upload(self, body: bytes | None) -> Reply:
        st = self.state
        if body is None:
            raise ApiError(413, "FILE_TOO_LARGE", "File size too large to process")
        feature = self.headers.get("feature")
        org = self.headers.get("X-CRM-ORG")
        if not feature or not org or org.strip() != st.zgid:
            return Reply(400, {
                "ERROR_CODE": 400,
                "ERROR_MESSAGE": "Bad Request",
                "x-error": "check if headers [feature, X-CRM-ORG] are present and valid",
                "info": "Bad Request",
                "x-info": "Link not valid",
                "http_status": "400",
            })
        if feature.strip().lower() != "bulk-write":
            # captured with HTTP 200 (§2.4): clients must read `status`
            return Reply(200, {"status": "error", "code": "NOT_SUPPORTED_FEATURE",
                               "message": "Feature is not supported",
                               "details": {"created_time": "1970-01-01T00:00:00+00:00"}},
                         charge=False)
        parts = parse_multipart(body, self.headers.get("Content-Type", ""))
        if "file" not in parts:
            raise ApiError(400, "MANDATORY_NOT_FOUND", "required param file is not found",
                           {"param_name": "file"})
        data = parts["file"][1]
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "FILE_TOO_LARGE", "File size too large to process")
        if not is_zip(data):
            raise ApiError(400, "INVALID_FILE_FORMAT",
                           "invalid file format. only zip format is supported",
                           {"created_time": now_iso()})
        up = st.add_upload(data)
        return Reply(200, {"status": "success", "code": "FILE_UPLOAD_SUCCESS",
                           "message": "file uploaded.",
                           "details": {"file_id": up.file_id, "created_time": up.created_time}})

    # ---- admin ------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: bytes, query: dict[str, str]) -> Reply:
        st = self.state
        payload = json.loads(body) if body.strip() else {}
        route = (method, path.rstrip("/"))
        if route == ("GET", "/__sim/health"):
            return Reply(200, {"ok": True})
        if route == ("POST", "/__sim/reset"):
            st.reset()
            return Reply(200, {"ok": True})
        if route == ("GET", "/__sim/config"):
            return Reply(200, st.update_config({}))
        if route == ("POST", "/__sim/config"):
            return Reply(200, st.update_config(payload))
        if route == ("GET", "/__sim/credits"):
            return Reply(200, st.credit_report())
        if route == ("GET", "/__sim/requests"):
            with st.lock:
                log = list(st.requests)
                if "limit" in query:
                    log = log[len(log) - int(query["limit"]):] if int(query["limit"]) else []
                return Reply(200, {"requests": log,
                                   "max_concurrent": st.max_concurrent,
                                   "max_concurrent_sub": st.max_concurrent_sub,
                                   "in_flight": st.active})
        if route == ("GET", "/__sim/stats"):
            return Reply(200, st.stats())
        if method == "GET" and path.startswith("/__sim/records/"):
            name = path[len("/__sim/records/"):].strip("/")
            if name not in st.stores:
                return Reply(404, {"error": f"unknown module {name!r}"})
            with st.lock:
                return Reply(200, {"data": [dict(r) for r in st.stores[name].records.values()]})
        if route == ("POST", "/__sim/faults"):
            st.add_fault(payload["api"], str(payload["kind"]), int(payload.get("count", 1)),
                         float(payload.get("seconds", 0.0)))
            return Reply(200, {"ok": True})
        if route == ("GET", "/__sim/faults"):
            with st.lock:
                return Reply(200, {"faults": [vars(f) for f in st.faults]})
        if route == ("DELETE", "/__sim/faults"):
            with st.lock:
                st.faults.clear()
            return Reply(200, {"ok": True})
        if route == ("POST", "/__sim/tokens/invalidate"):
            st.invalidate_tokens()
            return Reply(200, {"ok": True})
        if route == ("POST", "/__sim/bulk-read"):
            per_page = self.server.reads.set_per_page(int(payload.get("per_page", 200_000)))
            return Reply(200, {"per_page": per_page})
        if path.startswith("/__sim/records/") and method in ("POST", "PATCH", "DELETE"):
            return Reply(200, user_edit(st, method, path[len("/__sim/records/"):], payload))
        if route == ("POST", "/__sim/jobs/fail-next"):
            with st.lock:
                st.fail_next += int(payload.get("count", 1))
            return Reply(200, {"ok": True})
        return Reply(404, {"error": "unknown admin endpoint", "apis": list(API_NAMES)})

