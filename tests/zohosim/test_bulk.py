"""Upload, bulk write jobs, result downloads and callbacks over HTTP."""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.zohosim.helpers import HEADER, Api, error, make_zip, mappings, order_row
from zohosim.testing import SimProcess

# ---- upload ----------------------------------------------------------------------------------


def test_upload_success(api: Api) -> None:
    r = api.upload(make_zip([order_row(1)]))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert (body["status"], body["code"], body["message"]) == (
        "success", "FILE_UPLOAD_SUCCESS", "file uploaded.")
    assert isinstance(body["details"]["file_id"], str)
    assert body["details"]["file_id"].isdigit()
    assert body["details"]["created_time"]


def test_upload_recognises_zip_by_content(api: Api) -> None:
    """The SDK sends a part with no Content-Type and the filename ``file``."""
    r = api.upload(make_zip([order_row(1)]), filename="file", content_type=None)
    assert r.json()["code"] == "FILE_UPLOAD_SUCCESS"


def test_upload_header_errors(api: Api) -> None:
    data = make_zip([order_row(1)])
    for kw in ({"org": "999"}, {"feature": ""}):
        r = api.upload(data, **kw)
        assert r.status_code == 400
        assert r.json()["x-error"] == "check if headers [feature, X-CRM-ORG] are present and valid"
    r = api.post("/crm/v8/upload", headers=api.headers(feature="bulk-write"),
                 files={"file": ("a.zip", data)})
    assert r.status_code == 400
    r = api.upload(data, feature="bulk-read")
    assert r.status_code == 200  # as captured from Zoho: clients must read `status`
    assert r.json() == {"status": "error", "code": "NOT_SUPPORTED_FEATURE",
                        "message": "Feature is not supported",
                        "details": {"created_time": "1970-01-01T00:00:00+00:00"}}


def test_upload_content_errors(api: Api) -> None:
    r = api.upload(b"parent_id,Name\n1,x\n", filename="orders.csv", content_type="text/csv")
    assert error(r) == (400, "INVALID_FILE_FORMAT")
    assert r.json()["message"] == "invalid file format. only zip format is supported"
    assert "created_time" in r.json()["details"]
    r = api.post("/crm/v8/upload", headers=api.headers(feature="bulk-write",
                                                        **{"X-CRM-ORG": api.sim.zgid}),
                 files={"other": ("a.zip", make_zip([order_row(1)]))})
    assert error(r) == (400, "MANDATORY_NOT_FOUND")
    wide = make_zip([["v"] * 201], header=[f"c{i}" for i in range(201)])
    assert error(api.upload(wide)) == (400, "HEADER_LIMIT_EXCEEDED")
    long = make_zip([["1", "x"]] * 25_001, header=["parent_id", "Name"])
    assert error(api.upload(long)) == (400, "LIMIT_EXCEEDED")
    assert api.upload(make_zip([["1", "x"]] * 25_000, header=["parent_id", "Name"])).ok


def test_upload_too_large(api: Api) -> None:
    big = b"PK\x03\x04" + b"\0" * (25 * 1024 * 1024 + 10)
    r = api.upload(big)
    assert error(r) == (413, "FILE_TOO_LARGE")
    assert r.json()["message"] == "File size too large to process"
    assert api.get("/crm/v8/org").status_code == 200  # connection still usable


# ---- create job errors ---------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        keys = path.split(".")
        target: Any = body
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if value is _DELETE:
            del target[int(last) if isinstance(target, list) else last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


_DELETE = object()
CREATE_ERRORS = [
    ("operation", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "operation"}),
    ("operation", "merge", "INVALID_DATA", {"api_name": "operation"}),
    ("callback", {"url": "http://x.example/cb", "method": "get"}, "INVALID_CALLBACK_METHOD",
     {"supported_callback_methods": ["post"]}),
    ("callback", {"method": "post"}, "MANDATORY_NOT_FOUND", {"api_name": "url"}),
    ("resource", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "resource"}),
    ("resource", [], "INVALID_DATA", {"api_name": "resource"}),
    ("resource.0.type", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "type"}),
    ("resource.0.module", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "module"}),
    ("resource.0.module", "Orders", "INVALID_DATA", {"api_name": "module"}),
    ("resource.0.module", {"api_name": "asdf"}, "MODULE_NOT_AVAILABLE", {}),
    ("resource.0.file_id", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "file_id"}),
    ("resource.0.file_id", "5725767000000000042", "INVALID_FILE_ID", {}),
    ("resource.0.find_by", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "find_by"}),
    ("resource.0.find_by", "Customer_Name", "INVALID_DATA", {"api_name": "find_by"}),
    ("resource.0.field_mappings.0.api_name", "Bogus", "INVALID_FIELD", {"api_name": "Bogus"}),
    ("resource.0.field_mappings.0.api_name", _DELETE, "MANDATORY_NOT_FOUND",
     {"api_name": "api_name"}),
    ("resource.0.field_mappings.0.index", _DELETE, "MANDATORY_NOT_FOUND", {"api_name": "index"}),
    ("resource.0.field_mappings.0.index", -1, "COLUMN_INDEX_NOT_FOUND", {}),
    ("resource.0.field_mappings.0.index", 99, "COLUMN_INDEX_NOT_FOUND", {}),
    ("resource.0.field_mappings.8.format", "yyyy-MM-dd HH:mm", "INVALID_FORMAT",
     {"api_name": "Order_Date"}),
    ("resource.0.field_mappings.9.format", "qqq", "INVALID_FORMAT", {"api_name": "Shipped_At"}),
    ("resource.0.field_mappings.1", {"api_name": "Notes", "index": 11},
     "MANDATORY_FIELDS_NOT_MAPPED", {}),
]


@pytest.mark.parametrize(("path", "value", "code", "details"), CREATE_ERRORS,
                         ids=[f"{c[0]}={c[2]}" for c in CREATE_ERRORS])
def test_create_job_errors(api: Api, zohosim: SimProcess, path: str, value: Any, code: str,
                           details: dict[str, Any]) -> None:
    body = api.job_body(api.file_id(make_zip([order_row(1)])))
    _set(path, value if value is _DELETE else copy.deepcopy(value))(body)
    r = api.create_job(body)
    assert error(r) == (400, code), r.text
    for k, v in details.items():
        assert r.json()["details"][k] == v
    assert zohosim.admin.credits()["used_24h"] == 0
    assert zohosim.admin.stats()["jobs"]["total"] == 0


def test_create_job_more_errors(api: Api) -> None:
    fid = api.file_id(make_zip([order_row(1)]))
    assert error(api.post("/crm/bulk/v8/write", data=b"not json")) == (400, "INVALID_DATA")
    too_many = [{"api_name": "Notes", "index": 0}] * 201
    assert error(api.create_job(api.job_body(fid, field_mappings=too_many))) == (
        400, "HEADER_LIMIT_EXCEEDED")
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "Name\nx\n")
        zf.writestr("b.csv", "Name\ny\n")
    fid2 = api.file_id(two.getvalue())
    assert error(api.create_job(api.job_body(fid2, find_by=None, operation="insert",
                                             field_mappings=[{"api_name": "Name", "index": 0}]))
                 ) == (400, "FILE_NOT_SUPPORTED")
    # update needs no mandatory mapping; insert needs no find_by
    assert api.create_job(api.job_body(fid, operation="update", field_mappings=[
        {"api_name": "parent_id", "index": 0}, {"api_name": "Notes", "index": 11}])
    ).status_code == 201
    assert api.create_job(api.job_body(fid, operation="insert", find_by=None)).status_code == 201
    assert error(api.get("/crm/bulk/v8/write/5725767000000000042")) == (404, "RESOURCE_NOT_FOUND")


# ---- processing ----------------------------------------------------------------------------


def test_upsert_job_end_to_end(api: Api, zohosim: SimProcess) -> None:
    api.upsert([{"Name": "SO-old", "parent_id": "2", "Notes": "keep"}])
    rows = [order_row(1), order_row(2, Notes=""), order_row(3, Email="bad", Amount="x"),
            order_row(4, Name=""), order_row(5, Order_Status="Lost", Order_Date="2024-13-01")]
    r = api.create_job(api.job_body(api.file_id(make_zip(rows)), ignore_empty=True))
    assert r.status_code == 201
    created = r.json()
    assert (created["status"], created["code"], created["message"]) == (
        "success", "SUCCESS", "success")
    job_id = created["details"]["id"]
    assert job_id.isdigit()
    job = api.wait_job(job_id)
    assert job["status"] == "COMPLETED"
    assert job["id"] == job_id
    assert job["operation"] == "upsert"
    assert job["ignore_empty"] is True
    (res,) = job["resource"]
    assert res["status"] == res["code"] == "COMPLETED"
    assert res["module"] == {"id": res["module"]["id"], "api_name": "Orders"}
    assert res["module"]["id"].isdigit()
    assert res["file"] == {"status": "COMPLETED", "name": "orders.csv", "added_count": 1,
                           "skipped_count": 3, "updated_count": 1, "total_count": 5}
    assert res["field_mappings"][0] == {"api_name": "parent_id", "index": 0, "format": None,
                                        "find_by": None, "module": None,
                                        "default_value": None}
    assert res["field_mappings"][8]["format"] == "yyyy-MM-dd"
    url = job["result"]["download_url"]
    assert url == (f"{zohosim.base_url}/v8/crm/{zohosim.zgid}/bulk-write/{job_id}/{job_id}.zip")
    r = api.http.get(url, headers=api.headers(), timeout=10)
    assert r.headers["Content-Type"] == "application/zip"
    assert f'filename="{job_id}.zip"' in r.headers["Content-Disposition"]
    name, out = api.result_rows(job)
    assert name == "Orders-orders.csv"
    assert list(out[0]) == ["parent_id", "Name", "Customer_Name", "STATUS", "RECORD_ID",
                            "ERRORS"]
    assert [(o["parent_id"], o["STATUS"], o["ERRORS"]) for o in out] == [
        ("1", "ADDED", ""),
        ("2", "UPDATED", ""),
        ("3", "SKIPPED", "INVALID_DATA-Email,Amount"),
        ("4", "SKIPPED", "MANDATORY_NOT_FOUND-Name"),
        ("5", "SKIPPED", "INVALID_DATA-Order_Status,Order_Date"),
    ]
    assert out[0]["RECORD_ID"].isdigit() and out[2]["RECORD_ID"] == ""
    stored = {x["parent_id"]: x for x in zohosim.admin.records()}
    assert out[1]["RECORD_ID"] == stored["2"]["id"]
    assert stored["2"]["Notes"] == "keep"  # ignore_empty: empty cell left the value alone
    assert stored["2"]["Name"] == "SO-2"
    assert stored["1"]["Shipped_At"] == "2024-05-02T04:30:00+00:00"
    assert stored["1"]["Is_Gift"] is False
    assert stored["1"]["Amount"] == 1.5


def test_ignore_empty_false_clears(api: Api, zohosim: SimProcess) -> None:
    api.upsert([{"Name": "SO-2", "parent_id": "2", "Notes": "old"}])
    api.run_job([order_row(2, Notes="")], ignore_empty=False)
    (stored,) = zohosim.admin.records()
    assert "Notes" not in stored


def test_insert_with_find_by_skips_matches(api: Api) -> None:
    api.upsert([{"Name": "SO-1", "parent_id": "1"}])
    job = api.run_job([order_row(1), order_row(2)], operation="insert")
    assert job["resource"][0]["file"]["added_count"] == 1
    _name, out = api.result_rows(job)
    assert [(o["STATUS"], o["ERRORS"]) for o in out] == [("SKIPPED", "DUPLICATE_DATA-parent_id"),
                                                       ("ADDED", "")]


def test_update_never_creates(api: Api, zohosim: SimProcess) -> None:
    api.upsert([{"Name": "SO-1", "parent_id": "1"}])
    job = api.run_job([order_row(1, Notes="new"), order_row(2)], operation="update")
    _name, out = api.result_rows(job)
    assert [(o["STATUS"], o["ERRORS"]) for o in out] == [
        ("UPDATED", ""), ("SKIPPED", "RESOURCE_NOT_FOUND-parent_id")]
    assert len(zohosim.admin.records()) == 1


def test_duplicate_keys_in_one_file_update_in_order(api: Api, zohosim: SimProcess) -> None:
    job = api.run_job([order_row(1, Notes="first"), order_row(1, Notes="second")])
    assert job["resource"][0]["file"]["added_count"] == 1
    assert job["resource"][0]["file"]["updated_count"] == 1
    assert zohosim.admin.records()[0]["Notes"] == "second"


def test_other_formats_and_default_value(api: Api, zohosim: SimProcess) -> None:
    header = ["parent_id", "Name", "Order_Date", "Shipped_At", "Order_Status"]
    rows = [["1", "SO-1", "05/31/2024", "31.05.2024 13:45", ""]]
    fid = api.file_id(make_zip(rows, header=header, delimiter=";"))
    fm = [{"api_name": "parent_id", "index": 0}, {"api_name": "Name", "index": 1},
          {"api_name": "Order_Date", "index": 2, "format": "MM/dd/yyyy"},
          {"api_name": "Shipped_At", "index": 3, "format": "dd.MM.yyyy HH:mm"},
          {"api_name": "Order_Status", "index": 4, "default_value": {"value": "New"}},
          {"api_name": "Currency_Code", "default_value": {"value": "GBP"}}]
    r = api.create_job(api.job_body(fid, field_mappings=fm))
    job = api.wait_job(r.json()["details"]["id"])
    assert job["resource"][0]["file"]["added_count"] == 1
    (stored,) = zohosim.admin.records()
    assert stored["Order_Date"] == "2024-05-31"
    assert stored["Shipped_At"] == "2024-05-31T13:45:00+00:00"
    assert stored["Order_Status"] == "New"
    assert stored["Currency_Code"] == "GBP"


def test_auto_mapping_by_header(api: Api, zohosim: SimProcess) -> None:
    header = ["parent_id", "Name", "Unknown_Column"]
    fid = api.file_id(make_zip([["1", "SO-1", "zzz"]], header=header))
    body = api.job_body(fid)
    del body["resource"][0]["field_mappings"]
    job = api.wait_job(api.create_job(body).json()["details"]["id"])
    assert [m["api_name"] for m in job["resource"][0]["field_mappings"]] == ["parent_id", "Name"]
    assert zohosim.admin.records()[0]["Name"] == "SO-1"


def test_job_credits_and_zero_cost_calls(api: Api, zohosim: SimProcess) -> None:
    job = api.run_job([order_row(1)])
    api.result_rows(job)
    c = zohosim.admin.credits()
    assert c["by_api"] == {"bulk_create": 500}
    assert c["calls_by_api"]["upload"] == 1
    assert c["calls_by_api"]["download"] == 1


def test_download_needs_auth_and_a_finished_job(api: Api, zohosim: SimProcess) -> None:
    job = api.run_job([order_row(1)])
    url = job["result"]["download_url"]
    assert error(requests.get(url, timeout=10)) == (401, "AUTHENTICATION_FAILURE")
    bogus = url.replace(job["id"], "5725767000000000042")
    assert error(api.http.get(bogus, headers=api.headers(), timeout=10)) == (
        404, "RESOURCE_NOT_FOUND")


def test_relative_download_url(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(download_url_style="relative")
    job = api.run_job([order_row(1)])
    url = job["result"]["download_url"]
    assert url == f"/v8/crm/{zohosim.zgid}/bulk-write/{job['id']}/{job['id']}.zip"
    # the SDK requests a relative URL as <base>//<path>
    r = api.http.get(f"{zohosim.base_url}/{url}", headers=api.headers(), timeout=10)
    assert r.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["Orders-orders.csv"]


def test_fail_next_job(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.fail_next_job()
    job = api.run_job([order_row(1)])
    assert job["status"] == "FAILED"
    assert job["resource"][0]["status"] == "FAILED"
    assert "result" not in job
    assert zohosim.admin.records() == []
    assert api.run_job([order_row(1)])["status"] == "COMPLETED"
    assert zohosim.admin.stats()["jobs"]["by_status"] == {"FAILED": 1, "COMPLETED": 1}


@pytest.mark.parametrize("spelling", ["IN PROGRESS", "INPROGRESS"])
def test_status_progression(api: Api, zohosim: SimProcess, spelling: str) -> None:
    zohosim.admin.configure(job_rows_per_second=100, job_queue_seconds=1.0,
                            status_spelling=spelling)
    fid = api.file_id(make_zip([order_row(i) for i in range(100)]))
    job_id = api.create_job(api.job_body(fid)).json()["details"]["id"]
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen.append(api.job(job_id))
        if seen[-1]["status"] == "COMPLETED":
            break
        time.sleep(0.05)
    statuses = list(dict.fromkeys(j["status"] for j in seen))
    assert statuses == ["ADDED", spelling, "COMPLETED"]
    added = seen[0]
    assert added["resource"][0]["code"] == "ADDED"
    assert added["resource"][0]["file"] == {"status": spelling}
    assert "result" not in added
    progress = next(j for j in seen if j["status"] == spelling)
    assert progress["resource"][0]["status"] == spelling
    assert "result" not in progress
    assert 0 <= progress["resource"][0]["file"]["added_count"] < 100
    assert seen[-1]["resource"][0]["file"]["added_count"] == 100


# ---- callback --------------------------------------------------------------------------------


@pytest.fixture
def callback_server() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers["Content-Length"])
            received.append({"content_type": self.headers["Content-Type"],
                             "body": json.loads(self.rfile.read(n))})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            got.set()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/zoho/callback", received, got
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_callback_posts_job_details(api: Api,
                                    callback_server: tuple[str, list[dict[str, Any]],
                                                           threading.Event]) -> None:
    url, received, got = callback_server
    fid = api.file_id(make_zip([order_row(1)]))
    body = api.job_body(fid, callback={"url": url, "method": "post"})
    job_id = api.create_job(body).json()["details"]["id"]
    assert got.wait(10)
    (hit,) = received
    assert hit["content_type"] == "application/json"
    assert hit["body"]["id"] == job_id
    assert hit["body"]["status"] == "COMPLETED"
    assert hit["body"]["callback"] == {"url": url, "method": "post"}
    assert hit["body"]["result"]["download_url"].endswith(f"/{job_id}.zip")
    assert api.job(job_id)["callback"] == {"url": url, "method": "post"}


def test_unreachable_callback_is_ignored(api: Api) -> None:
    fid = api.file_id(make_zip([order_row(1)]))
    body = api.job_body(fid, callback={"url": "http://127.0.0.1:9/nothing", "method": "post"})
    job = api.wait_job(api.create_job(body).json()["details"]["id"])
    assert job["status"] == "COMPLETED"


def test_full_size_job_is_fast(api: Api, zohosim: SimProcess) -> None:
    rows = [order_row(i) for i in range(25_000)]
    fid = api.file_id(make_zip(rows))
    start = time.monotonic()
    job = api.wait_job(api.create_job(api.job_body(fid)).json()["details"]["id"])
    elapsed = time.monotonic() - start
    assert job["resource"][0]["file"]["added_count"] == 25_000
    assert elapsed < 5.0  # ~0.5 s on an idle machine; generous for a busy CI box
    assert len(HEADER) == len(mappings())


def test_character_encoding(api: Api, zohosim: SimProcess) -> None:
    text = "parent_id,Name,Customer_Name\n1,SO-1,Jürgen Ærø\n".encode("cp1252")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("orders.csv", text)
    fid = api.file_id(buf.getvalue())
    fm = [{"api_name": "parent_id", "index": 0}, {"api_name": "Name", "index": 1},
          {"api_name": "Customer_Name", "index": 2}]
    body = api.job_body(fid, field_mappings=fm, character_encoding="windows-1252")
    job = api.wait_job(api.create_job(body).json()["details"]["id"])
    assert job["character_encoding"] == "windows-1252"
    assert zohosim.admin.records()[0]["Customer_Name"] == "Jürgen Ærø"
    bad = api.job_body(fid, field_mappings=fm, character_encoding="klingon-8")
    assert error(api.create_job(bad)) == (400, "INVALID_DATA")


def test_upload_of_exactly_25_mb_passes_the_size_check(api: Api) -> None:
    data = b"PK\x03\x04" + b"\0" * (25 * 1024 * 1024 - 4)
    r = api.upload(data)
    # not FILE_TOO_LARGE: it gets as far as reading the (broken) zip
    assert error(r) == (400, "INVALID_FILE_FORMAT")


def test_upload_errors_with_http_200_switch(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(upload_errors_http_200=True)
    r = api.upload(b"not a zip", filename="x.csv", content_type="text/csv")
    assert (r.status_code, r.json()["status"], r.json()["code"]) == (
        200, "error", "INVALID_FILE_FORMAT")


def test_a_used_file_id_runs_again_from_its_spilled_zip(api: Api, zohosim: SimProcess) -> None:
    """A job takes an upload's rows; the file id still names the zip (kept on disk) for another."""
    fid = api.file_id(make_zip([order_row(1), order_row(2)]))
    first = api.wait_job(api.create_job(api.job_body(fid)).json()["details"]["id"])
    r = api.create_job(api.job_body(fid))
    assert r.status_code == 201, r.text
    second = api.wait_job(r.json()["details"]["id"])
    assert first["resource"][0]["file"]["added_count"] == 2
    assert second["resource"][0]["file"] == {
        "status": "COMPLETED", "name": "orders.csv", "added_count": 0, "skipped_count": 0,
        "updated_count": 2, "total_count": 2}
    # both result zips stay downloadable (kept on disk), until a reset
    assert [o["STATUS"] for o in api.result_rows(first)[1]] == ["ADDED", "ADDED"]
    assert [o["STATUS"] for o in api.result_rows(second)[1]] == ["UPDATED", "UPDATED"]
    assert zohosim.admin.stats()["uploads"] == 1
    zohosim.admin.reset()
    url = second["result"]["download_url"]
    assert api.http.get(url, headers={"Authorization": f"Zoho-oauthtoken {api.new_token()}"},
                        timeout=10).status_code == 404
