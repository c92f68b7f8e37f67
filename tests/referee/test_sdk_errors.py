"""Referee: the SDK parses zohosim's error answers, job states and download forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.referee.sdkrun import choice, obj, run_sdk, step

HEADER = ["parent_id", "Name", "Email"]
ROWS = [[f"LEG-E-{i}", f"Order {i}", f"e{i}@example.com"] for i in range(1, 6)]
MAPPINGS = [{"api_name": name, "index": i} for i, name in enumerate(HEADER)]


def api_exception(out: dict[str, Any], status: int, code: str, message: str | None) -> dict:
    assert out["status_code"] == status, out
    parsed = obj(out)
    assert parsed["$type"] == "APIException", parsed
    assert parsed["status"] == {"$choice": "error"}
    assert parsed["code"] == {"$choice": code}, parsed
    if message is not None:
        assert parsed["message"] == {"$choice": message}, parsed
    return parsed


def test_sdk_parses_bulk_write_errors(zohosim: Any, tmp_path: Path) -> None:
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upload", "rows": [HEADER, *ROWS], "not_zip": True, "zip_name": "orders.csv"},
            {"op": "upload", "rows": [HEADER, *ROWS]},
            {"op": "create_job", "field_mappings": [*MAPPINGS, {"api_name": "Nmae", "index": 1}]},
            {"op": "create_job", "field_mappings": MAPPINGS, "file_id": "5725767000099999999"},
            {"op": "create_job", "field_mappings": MAPPINGS, "find_by": None},
            {"op": "poll_job", "job_id": "5725767000099999998", "timeout": 0},
            {"op": "upload", "rows": [HEADER, *ROWS], "zgid": "123"},
            {"op": "upload", "rows": [HEADER, *ROWS], "feature": "bulk-read"},
        ],
    )
    # Upload of a non-zip file (§2.4): HTTP status UNCONFIRMED (400 documented, 200 observed).
    bad = step(report, 0)
    assert bad["status_code"] in (200, 400)
    api_exception(
        bad,
        bad["status_code"],
        "INVALID_FILE_FORMAT",
        "invalid file format. only zip format is supported",
    )
    assert isinstance(obj(step(report, 1))["details"]["file_id"], int)
    api_exception(step(report, 2), 400, "INVALID_FIELD", "invalid mapping. invalid api_name Nmae.")
    api_exception(step(report, 3), 400, "INVALID_FILE_ID", "improper file id")
    missing = api_exception(step(report, 4), 400, "MANDATORY_NOT_FOUND", None)
    assert "find_by" in missing["message"]["$choice"]
    api_exception(
        step(report, 5), 404, "RESOURCE_NOT_FOUND", "The requested resource doesn't exist."
    )
    # A wrong X-CRM-ORG gets the upload gateway's envelope, which the SDK models too (§2.4).
    gateway = step(report, 6)
    assert gateway["status_code"] in (400, 401, 403), gateway
    parsed = obj(gateway)
    assert parsed["$type"] == "APIException", parsed
    assert isinstance(parsed["error_code"], int)
    assert parsed["x_error"] == {
        "$choice": "check if headers [feature, X-CRM-ORG] are present and valid"
    }
    # NOT_SUPPORTED_FEATURE is outside the SDK's enums: the SDK picks SuccessResponse for it
    # (finding N1); only its status tells the error apart.
    feature = obj(step(report, 7))
    assert feature["status"] == {"$choice": "error"}, feature
    assert feature["code"] == {"$choice": "NOT_SUPPORTED_FEATURE"}, feature


def test_sdk_parses_invalid_token(zohosim: Any, tmp_path: Path) -> None:
    # The SDK never refreshes on INVALID_TOKEN (§13.11): it hands the 401 to the caller.
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "get_records", "fields": HEADER},
            {"op": "admin", "path": "/__sim/tokens/invalidate"},
            {"op": "org"},
            {"op": "get_records", "fields": HEADER},
        ],
    )
    assert step(report, 0)["pages"][0]["status_code"] == 204
    assert step(report, 1)["status_code"] == 200
    api_exception(step(report, 2), 401, "INVALID_TOKEN", "invalid oauth token")
    api_exception(
        step(report, 3)["pages"][0] | {"op": "get_records"},
        401,
        "INVALID_TOKEN",
        "invalid oauth token",
    )


def test_sdk_follows_a_slow_job_and_a_relative_download_url(zohosim: Any, tmp_path: Path) -> None:
    zohosim.admin.configure(
        job_queue_seconds=1.5,
        job_rows_per_second=4,
        status_spelling="INPROGRESS",
        download_url_style="relative",
    )
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upload", "rows": [HEADER, *ROWS]},
            {"op": "create_job", "field_mappings": MAPPINGS},
            {"op": "poll_job", "timeout": 20, "interval": 0.1},
            {"op": "download"},
        ],
    )
    polled = step(report, 2)
    seen = polled["statuses_seen"]
    assert seen[0] == "ADDED" and seen[-1] == "COMPLETED", seen
    assert "INPROGRESS" in seen, seen
    assert set(seen) <= {"ADDED", "INPROGRESS", "COMPLETED"}, seen
    done = obj(polled)
    assert done["resource"][0]["file"]["added_count"] == len(ROWS)
    url = done["result"]["download_url"]
    assert url.startswith("/"), url
    # The SDK asks for <base> + "//" + <relative url> (§13.5).
    dl = step(report, 3)
    assert dl["status_code"] == 200, dl
    table = next(iter(dl["csv"].values()))
    assert [row[3] for row in table[1:]] == ["ADDED"] * len(ROWS)
    log = (tmp_path / "sdk.log").read_text(encoding="utf-8")
    assert f"GET - URL = {zohosim.base_url.rstrip('/')}/{url}" in log


def test_sdk_auto_refresh_fields(zohosim: Any, tmp_path: Path) -> None:
    # SDKConfig(auto_refresh_fields=True) lists modules (GET /crm/v8/settings/modules) first.
    records = [
        {"parent_id": "LEG-M-1", "Name": "Order M-1", "Quantity": 4, "Order_Status": choice("Paid")}
    ]
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": records, "duplicate_check_fields": ["parent_id"]},
            {"op": "get_records", "fields": HEADER + ["Quantity", "Order_Status"]},
        ],
        auto_refresh_fields=True,
        pick_list_validation=True,  # the SDK's default: picklist values checked client-side
    )
    item = obj(step(report, 0))["data"][0]
    assert item["action"] == {"$choice": "insert"}, item
    record = obj(step(report, 1)["pages"][0])["data"][0]
    assert record["Quantity"] == 4 and record["parent_id"] == "LEG-M-1"
    assert record["Order_Status"] == choice("Paid")


def test_sdk_reads_a_failed_job(zohosim: Any, tmp_path: Path) -> None:
    zohosim.admin.fail_next_job()
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upload", "rows": [HEADER, *ROWS], "as_stream": True},
            {"op": "create_job", "field_mappings": MAPPINGS},
            {"op": "poll_job", "timeout": 20},
        ],
    )
    failed = obj(step(report, 2))
    assert failed["$type"] == "BulkWriteResponse", failed
    assert failed["status"] == "FAILED"
    assert failed["resource"][0]["status"] == {"$choice": "FAILED"}
    assert failed.get("result") is None
    assert zohosim.admin.records("Orders") == []


def test_sdk_parses_upload_error_sent_with_http_200(zohosim: Any, tmp_path: Path) -> None:
    zohosim.admin.configure(upload_errors_http_200=True)
    report = run_sdk(
        zohosim,
        tmp_path,
        [{"op": "upload", "rows": [HEADER, *ROWS], "not_zip": True, "zip_name": "orders.csv"}],
    )
    api_exception(
        step(report, 0),
        200,
        "INVALID_FILE_FORMAT",
        "invalid file format. only zip format is supported",
    )
