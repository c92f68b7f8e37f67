"""Drive a running zohosim with Zoho's official Python SDK (zohocrmsdk8-0) and print what it parsed.

The SDK keeps its state in process-wide globals (Initializer, field-metadata cache, loggers), so
every scenario runs in a fresh interpreter:

    python sdk_driver.py SPEC.json          # prints exactly one JSON object on stdout

SPEC is a JSON object: the sim's ``base_url``, ``client_id``, ``client_secret``,
``refresh_token``, ``zgid``, a private ``workdir`` and a list of ``steps`` (each ``{"op": ...}``).
Values the SDK parsed are encoded so their Python type survives JSON (see :func:`encode`):
``{"$date": "2024-05-01"}``, ``{"$datetime": "...+00:00"}``, ``{"$choice": "Paid"}``,
model objects as ``{"$type": "ClassName", member: value, ...}``; bool/int/float/str/None as is.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
import traceback
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import requests
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.bulk_read import BodyWrapper as ReadRequestWrapper
from zohocrmsdk.src.com.zoho.crm.api.bulk_read import BulkReadOperations
from zohocrmsdk.src.com.zoho.crm.api.bulk_read import CallBack as ReadCallBack
from zohocrmsdk.src.com.zoho.crm.api.bulk_read import Criteria as ReadCriteria
from zohocrmsdk.src.com.zoho.crm.api.bulk_read import Query as ReadQuery
from zohocrmsdk.src.com.zoho.crm.api.bulk_write import (
    BulkWriteOperations,
    CallBack,
    FieldMapping,
    FileBodyWrapper,
    RequestWrapper,
    Resource,
    ResponseWrapper,
    UploadFileHeader,
)
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.modules import MinifiedModule
from zohocrmsdk.src.com.zoho.crm.api.org import OrgOperations
from zohocrmsdk.src.com.zoho.crm.api.record import (
    BodyWrapper,
    GetRecordsParam,
    Record,
    RecordOperations,
)
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
from zohocrmsdk.src.com.zoho.crm.api.util import Choice, CommonAPIHandler, StreamWrapper
from zohocrmsdk.src.com.zoho.crm.api.util.json_converter import JSONConverter

MODULE = "Orders"


def encode(value: Any) -> Any:
    """Turn a value the SDK parsed into JSON without losing its Python type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat(), "$aware": value.tzinfo is not None}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Choice):
        return {"$choice": encode(value.get_value())}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, Record):
        return {"$type": "Record", **encode(value.get_key_values())}
    cls = type(value).__name__
    out: dict[str, Any] = {"$type": cls}
    for attr, member in vars(value).items():
        name = attr.split("__", 1)[1] if attr.startswith("_") and "__" in attr else attr
        if name == "key_modified":
            continue
        out[name] = encode(member)
    return out


def decode(value: Any) -> Any:
    """Turn a tagged spec value into what the SDK expects for a record field."""
    if isinstance(value, dict):
        if "$date" in value:
            return date.fromisoformat(value["$date"])
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$choice" in value:
            return Choice(value["$choice"])
    return value


def sdk_error(exc: SDKException) -> dict[str, Any]:
    return {
        "code": exc.code,
        "message": exc.error_message,
        "details": encode(exc.details),
        "cause": repr(exc.cause) if exc.cause is not None else None,
    }


class Driver:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.base = spec["base_url"].rstrip("/")
        self.workdir = Path(spec["workdir"])
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "sdk.log"
        self.ctx: dict[str, Any] = {}

    # -- set-up ------------------------------------------------------------------------------
    def initialize(self) -> dict[str, Any]:
        environment = DataCenter.Environment(self.base, self.base + "/oauth/v2/token", self.base)
        token = OAuthToken(
            client_id=self.spec["client_id"],
            client_secret=self.spec["client_secret"],
            refresh_token=self.spec["refresh_token"],
        )
        resources = self.workdir / "resources"
        resources.mkdir(exist_ok=True)
        Initializer.initialize(
            environment=environment,
            token=token,
            store=FileStore(str(self.workdir / "tokens.csv")),
            sdk_config=SDKConfig(
                auto_refresh_fields=bool(self.spec.get("auto_refresh_fields", False)),
                pick_list_validation=self.spec.get("pick_list_validation", False),
                connect_timeout=10.0,
                read_timeout=30.0,
            ),
            resource_path=str(resources),
            logger=Logger.get_instance(Logger.Levels.INFO, str(self.log_path)),
        )
        return self.op_token({})

    # -- steps -------------------------------------------------------------------------------
    def op_token(self, step: dict[str, Any]) -> dict[str, Any]:
        token = Initializer.get_initializer().token
        access = token.get_token()  # refreshes when under 5 s of validity remain
        # get_token may refresh a copy loaded from the store: read what the store saved.
        with (self.workdir / "tokens.csv").open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("access_token") == access]
        saved = rows[-1] if rows else {}
        return {
            "access_token": access,
            "expires_in_ms": saved.get("expiry_time"),
            "api_domain": saved.get("api_domain"),
            "user_signature": saved.get("user_name") or None,
            "environment_url": Initializer.get_initializer().environment.url,
            "now_ms": int(time.time() * 1000),
        }

    def op_admin(self, step: dict[str, Any]) -> dict[str, Any]:
        """Call one of the sim's /__sim/ operator endpoints (fault injection, config)."""
        response = requests.request(
            step.get("method", "POST"), self.base + step["path"], json=step.get("body"), timeout=10
        )
        return {"status_code": response.status_code}

    def op_sleep(self, step: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(step["seconds"]))
        return {}

    def op_org(self, step: dict[str, Any]) -> dict[str, Any]:
        return self.wrap(OrgOperations().get_organization())

    def op_upsert(self, step: dict[str, Any]) -> dict[str, Any]:
        records = []
        for spec_record in step["records"]:
            record = Record()
            for key, value in spec_record.items():
                record.add_key_value(key, decode(value))
            records.append(record)
        body = BodyWrapper()
        body.set_data(records)
        if "duplicate_check_fields" in step:
            body.set_duplicate_check_fields(step["duplicate_check_fields"])
        body.set_trigger(step.get("trigger", []))
        return self.wrap(RecordOperations(MODULE).upsert_records(body))

    def op_get_records(self, step: dict[str, Any]) -> dict[str, Any]:
        pages = []
        page = int(step.get("page", 1))
        token: str | None = None
        while True:
            params = ParameterMap()
            params.add(GetRecordsParam.fields, ",".join(step["fields"]))
            params.add(GetRecordsParam.per_page, int(step.get("per_page", 200)))
            if token is not None:
                params.add(GetRecordsParam.page_token, token)
            else:
                params.add(GetRecordsParam.page, page)
            if "sort_by" in step:
                params.add(GetRecordsParam.sort_by, step["sort_by"])
                params.add(GetRecordsParam.sort_order, step.get("sort_order", "asc"))
            result = self.wrap(RecordOperations(MODULE).get_records(params))
            pages.append(result)
            obj = result.get("object") or {}
            info = obj.get("info") or {}
            if not step.get("all_pages") or not info.get("more_records") or len(pages) >= 100:
                break
            if step.get("use_page_token"):
                token = info.get("next_page_token")
            page += 1
        return {"pages": pages}

    def op_get_record(self, step: dict[str, Any]) -> dict[str, Any]:
        return self.wrap(RecordOperations(MODULE).get_record(int(step["id"])))

    def op_upload(self, step: dict[str, Any]) -> dict[str, Any]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(step["rows"])
        zip_path = self.workdir / step.get("zip_name", "orders.zip")
        if step.get("not_zip"):
            zip_path.write_text(buf.getvalue(), encoding="utf-8")
        else:
            with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(step.get("csv_name", "orders.csv"), buf.getvalue())
        body = FileBodyWrapper()
        if step.get("as_stream"):
            # name + stream: requests then names the multipart part's file just "file" (§13.4)
            stream = io.BytesIO(zip_path.read_bytes())
            body.set_file(StreamWrapper(name=zip_path.name, stream=stream))
        else:
            body.set_file(StreamWrapper(file_path=str(zip_path)))
        headers = HeaderMap()
        headers.add(UploadFileHeader.feature, step.get("feature", "bulk-write"))
        headers.add(UploadFileHeader.x_crm_org, step.get("zgid", self.spec["zgid"]))
        result = self.wrap(BulkWriteOperations().upload_file(body, headers))
        details = (result.get("object") or {}).get("details") or {}
        if "file_id" in details:
            self.ctx["file_id"] = details["file_id"]
        return result

    def op_create_job(self, step: dict[str, Any]) -> dict[str, Any]:
        mappings = []
        for m in step["field_mappings"]:
            mapping = FieldMapping()
            mapping.set_api_name(m["api_name"])
            if "index" in m:
                mapping.set_index(m["index"])
            if "format" in m:
                mapping.set_format(m["format"])
            mappings.append(mapping)
        module = MinifiedModule()
        module.set_api_name(step.get("module", MODULE))
        resource = Resource()
        resource.set_type(Choice("data"))
        resource.set_module(module)
        resource.set_file_id(str(step.get("file_id", self.ctx.get("file_id"))))
        if step.get("find_by", "parent_id") is not None:
            resource.set_find_by(step.get("find_by", "parent_id"))
        resource.set_field_mappings(mappings)
        request = RequestWrapper()
        request.set_operation(Choice(step.get("operation", "upsert")))
        request.set_ignore_empty(step.get("ignore_empty", True))
        request.set_character_encoding("UTF-8")
        request.set_resource([resource])
        if "callback_url" in step:
            callback = CallBack()
            callback.set_url(step["callback_url"])
            callback.set_method(Choice("post"))
            request.set_callback(callback)
        result = self.wrap(BulkWriteOperations().create_bulk_write_job(request))
        details = (result.get("object") or {}).get("details") or {}
        if "id" in details:
            self.ctx["job_id"] = details["id"]
        return result

    def op_poll_job(self, step: dict[str, Any]) -> dict[str, Any]:
        job_id = str(step.get("job_id", self.ctx.get("job_id")))
        deadline = time.monotonic() + float(step.get("timeout", 30))
        seen: list[Any] = []
        while True:
            result = self.wrap(BulkWriteOperations().get_bulk_write_job_details(job_id))
            obj = result.get("object") or {}
            status = obj.get("status")
            seen.append(status)
            if obj.get("$type") != "BulkWriteResponse" or status in ("COMPLETED", "FAILED"):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(float(step.get("interval", 0.2)))
        url = ((obj.get("result") or {}).get("download_url")) if isinstance(obj, dict) else None
        if url:
            self.ctx["download_url"] = url
        result["statuses_seen"] = seen
        return result

    def op_parse_job_json(self, step: dict[str, Any]) -> dict[str, Any]:
        """Parse a job-details JSON body (e.g. a callback's) with the SDK's own model."""
        converter = JSONConverter(CommonAPIHandler())
        parsed = converter.get_response(step["body"], ResponseWrapper.__module__)
        return {"object": encode(parsed)}

    def op_download(self, step: dict[str, Any]) -> dict[str, Any]:
        url = step.get("download_url", self.ctx.get("download_url"))
        response = BulkWriteOperations().download_bulk_write_result(url)
        if response is None:
            return {"response": None, "log_tail": self.log_tail()}
        out: dict[str, Any] = {
            "status_code": response.get_status_code(),
            "headers": dict(response.get_headers()),
        }
        obj = response.get_object()
        out["object_type"] = type(obj).__name__ if obj is not None else None
        if obj is not None and hasattr(obj, "get_file"):
            stream = obj.get_file()
            out["file_name"] = stream.get_name()
            raw = b"".join(stream.get_stream().iter_content(8192))
            out["size"] = len(raw)
            try:
                with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                    out["members"] = zf.namelist()
                    files = {}
                    for name in zf.namelist():
                        text = zf.read(name).decode("utf-8-sig")
                        files[name] = list(csv.reader(io.StringIO(text)))
                    out["csv"] = files
            except zipfile.BadZipFile as exc:
                out["zip_error"] = str(exc)
                out["head"] = raw[:200].decode("utf-8", "replace")
        elif obj is not None:
            out["object"] = encode(obj)
        return out

    # -- bulk read -----------------------------------------------------------------------------
    def op_read_create(self, step: dict[str, Any]) -> dict[str, Any]:
        module = MinifiedModule()
        module.set_api_name(step.get("module", MODULE))
        query = ReadQuery()
        query.set_module(module)
        if "fields" in step:
            query.set_fields(step["fields"])
        if "page" in step:
            query.set_page(step["page"])
        if "criteria" in step:
            query.set_criteria(self._read_criteria(step["criteria"]))
        request = ReadRequestWrapper()
        request.set_query(query)
        if "callback_url" in step:
            callback = ReadCallBack()
            callback.set_url(step["callback_url"])
            callback.set_method(Choice("post"))
            request.set_callback(callback)
        result = self.wrap(BulkReadOperations().create_bulk_read_job(request))
        data = (result.get("object") or {}).get("data") or []
        details = (data[0].get("details") or {}) if data else {}
        if "id" in details:
            self.ctx["read_job_id"] = details["id"]
        return result

    def _read_criteria(self, spec: dict[str, Any]) -> ReadCriteria:
        crit = ReadCriteria()
        if "group" in spec:
            crit.set_group_operator(Choice(spec["group_operator"]))
            crit.set_group([self._read_criteria(g) for g in spec["group"]])
            return crit
        from zohocrmsdk.src.com.zoho.crm.api.fields import MinifiedField

        fld = MinifiedField()
        fld.set_api_name(spec["api_name"])
        crit.set_field(fld)
        crit.set_comparator(Choice(spec["comparator"]))
        crit.set_value(spec["value"])
        return crit

    def op_read_poll(self, step: dict[str, Any]) -> dict[str, Any]:
        job_id = int(step.get("job_id", self.ctx.get("read_job_id", 0)))
        deadline = time.monotonic() + float(step.get("timeout", 30))
        seen: list[Any] = []
        while True:
            result = self.wrap(BulkReadOperations().get_bulk_read_job_details(job_id))
            data = (result.get("object") or {}).get("data") or [{}]
            state = data[0].get("state")
            state = state.get("$choice") if isinstance(state, dict) else state
            seen.append(state)
            if state in ("COMPLETED", "FAILED") or not data[0] or time.monotonic() > deadline:
                break
            time.sleep(float(step.get("interval", 0.1)))
        result["states_seen"] = seen
        return result

    def op_read_download(self, step: dict[str, Any]) -> dict[str, Any]:
        job_id = int(step.get("job_id", self.ctx.get("read_job_id", 0)))
        response = BulkReadOperations().download_result(job_id)
        return self._file_response(response)

    def _file_response(self, response: Any) -> dict[str, Any]:
        if response is None:
            return {"response": None, "log_tail": self.log_tail()}
        out: dict[str, Any] = {"status_code": response.get_status_code(),
                               "headers": dict(response.get_headers())}
        obj = response.get_object()
        out["object_type"] = type(obj).__name__ if obj is not None else None
        if obj is not None and hasattr(obj, "get_file"):
            stream = obj.get_file()
            out["file_name"] = stream.get_name()
            raw = b"".join(stream.get_stream().iter_content(8192))
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                out["members"] = zf.namelist()
                out["csv"] = {n: list(csv.reader(io.StringIO(zf.read(n).decode("utf-8-sig"))))
                              for n in zf.namelist()}
        elif obj is not None:
            out["object"] = encode(obj)
        return out

    # -- helpers -----------------------------------------------------------------------------
    def wrap(self, response: Any) -> dict[str, Any]:
        """Describe an APIResponse: status, headers, the parsed object and the raw JSON."""
        if response is None:
            # CommonAPIHandler.api_call logs and swallows SDKExceptions raised while parsing.
            return {"response": None, "log_tail": self.log_tail()}
        return {
            "status_code": response.get_status_code(),
            "object": encode(response.get_object()),
            "raw": response.get_response_json(),
        }

    def log_tail(self, lines: int = 15) -> list[str]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        keep = [ln for ln in text if "Exception" in ln or "ERROR" in ln or "exception" in ln]
        return (keep or text)[-lines:]

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {"steps": []}
        try:
            result["init"] = self.initialize()
        except SDKException as exc:
            result["init_error"] = sdk_error(exc)
            result["log_tail"] = self.log_tail()
            return result
        for step in self.spec.get("steps", []):
            handler = getattr(self, "op_" + step["op"])
            try:
                out = handler(step)
            except SDKException as exc:
                out = {"sdk_error": sdk_error(exc), "log_tail": self.log_tail()}
            except Exception as exc:  # noqa: BLE001 - report, the test decides
                out = {
                    "error": repr(exc),
                    "traceback": traceback.format_exc(),
                    "log_tail": self.log_tail(),
                }
            out["op"] = step["op"]
            result["steps"].append(out)
        return result


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    result = Driver(spec).run()
    sys.stdout.write(json.dumps(result, default=repr) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
