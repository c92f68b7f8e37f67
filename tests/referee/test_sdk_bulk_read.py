"""Referee: a Bulk Read (export) job created, followed and downloaded by Zoho's official SDK."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.referee.sdkrun import obj, run_sdk, step

FIELDS = ["parent_id", "Name", "Quantity", "Modified_Time"]


def _records(n: int) -> list[dict[str, Any]]:
    return [{"parent_id": f"LEG-R-{i:03d}", "Name": f"Order R-{i:03d}", "Quantity": i}
            for i in range(n)]


def _upserts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"op": "upsert", "records": records[i:i + 100],
             "duplicate_check_fields": ["parent_id"]} for i in range(0, len(records), 100)]


def test_sdk_creates_follows_and_downloads_a_read_job(zohosim: Any, tmp_path: Path) -> None:
    sent = _records(30)
    report = run_sdk(zohosim, tmp_path, [
        *_upserts(sent),
        {"op": "read_create", "fields": FIELDS},
        {"op": "read_poll"},
        {"op": "read_download"},
    ])
    created = step(report, 1)
    assert created["status_code"] == 201
    action = obj(created)["data"][0]
    assert action["$type"] == "SuccessResponse"
    assert action["code"] == {"$choice": "ADDED_SUCCESSFULLY"}
    assert action["details"]["operation"] == "read"
    polled = step(report, 2)
    assert polled["states_seen"][-1] == "COMPLETED"
    detail = obj(polled)["data"][0]
    assert detail["$type"] == "JobDetail"
    result = detail["result"]
    assert result["count"] == 30 and result["more_records"] is False
    assert result["per_page"] == 200_000 and result["page"] == 1
    assert result["download_url"] == f"/crm/bulk/v8/read/{detail['id']}/result"
    downloaded = step(report, 3)
    assert downloaded["status_code"] == 200
    assert downloaded["object_type"] == "FileBodyWrapper"
    (member,) = downloaded["members"]
    assert member == f"{detail['id']}.csv"
    rows = downloaded["csv"][member]
    assert rows[0] == ["Id", *FIELDS]
    got = {r[1]: (r[2], r[3]) for r in rows[1:]}
    assert got == {s["parent_id"]: (s["Name"], str(s["Quantity"])) for s in sent}
    ids = [int(r[0]) for r in rows[1:]]
    assert ids == sorted(ids)
    # the job initialise is 50 credits; status and download are free
    credits = zohosim.admin.credits()["by_api"]
    assert credits.get("bulk_read_create") == 50
    assert "bulk_read_get" not in credits and "bulk_read_download" not in credits


def test_sdk_pages_and_criteria(zohosim: Any, tmp_path: Path) -> None:
    zohosim.admin.bulk_read_page_size(12)
    sent = _records(30)
    criteria = {"group_operator": "and", "group": [
        {"api_name": "Quantity", "comparator": "greater_equal", "value": 5},
        {"api_name": "parent_id", "comparator": "starts_with", "value": "LEG-R-0"}]}
    report = run_sdk(zohosim, tmp_path, [
        *_upserts(sent),
        {"op": "read_create", "fields": ["parent_id"], "criteria": criteria, "page": 2},
        {"op": "read_poll"},
        {"op": "read_download"},
        {"op": "read_create", "fields": ["parent_id"], "criteria": criteria, "page": 3},
        {"op": "read_poll"},
    ])
    # Quantity 5..29 are 25 records; page 2 of 12 a page holds the 13th to 24th
    page2 = obj(step(report, 2))["data"][0]["result"]
    assert (page2["page"], page2["count"], page2["more_records"]) == (2, 12, True)
    rows = next(iter(step(report, 3)["csv"].values()))
    assert [r[1] for r in rows[1:]] == [f"LEG-R-{i:03d}" for i in range(17, 29)]
    page3 = obj(step(report, 5))["data"][0]["result"]
    assert (page3["page"], page3["count"], page3["more_records"]) == (3, 1, False)


def test_sdk_sees_bulk_read_errors(zohosim: Any, tmp_path: Path) -> None:
    report = run_sdk(zohosim, tmp_path, [
        {"op": "read_create", "fields": ["No_Such_Field"]},
        {"op": "read_create", "module": "Nope", "fields": ["parent_id"]},
        {"op": "read_poll", "job_id": 5725767000009999999},
    ])
    bad_field = step(report, 0)
    assert bad_field["status_code"] == 400
    err = obj(bad_field)
    assert err["$type"] == "APIException"
    assert err["code"] == {"$choice": "FIELD_NOT_AVAILABLE"}
    assert err["details"]["api_name"] == "No_Such_Field"
    bad_module = step(report, 1)
    assert bad_module["status_code"] == 400
    assert obj(bad_module)["code"] == {"$choice": "INVALID_MODULE"}
    missing = step(report, 2)
    assert missing["status_code"] == 404
    assert zohosim.admin.credits()["by_api"].get("bulk_read_create") is None


class _Catch(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_sdk_read_job_callback(zohosim: Any, tmp_path: Path) -> None:
    _Catch.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Catch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cb"
        report = run_sdk(zohosim, tmp_path, [
            *_upserts(_records(3)),
            {"op": "read_create", "fields": ["parent_id"], "callback_url": url},
            {"op": "read_poll"},
        ])
        step(report, 2)
    finally:
        server.shutdown()
        server.server_close()
    (body,) = _Catch.bodies
    job = body["data"][0]
    assert job["state"] == "COMPLETED" and job["result"]["count"] == 3
    assert job["callback"] == {"url": url, "method": "post"}
