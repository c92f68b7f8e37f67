"""Referee: a bulk-write upsert job driven end to end by Zoho's official Python SDK."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.referee.sdkrun import (
    assert_record_matches,
    choice,
    obj,
    run_sdk,
    step,
    typed_date,
    typed_datetime,
)

COLUMNS = [
    "parent_id",
    "Name",
    "Email",
    "Customer_Name",
    "Order_Status",
    "Amount",
    "Currency_Code",
    "Quantity",
    "Order_Date",
    "Shipped_At",
    "Is_Gift",
    "Notes",
]
FORMATS = {"Order_Date": "yyyy-MM-dd", "Shipped_At": "yyyy-MM-dd'T'HH:mm:ssXXX"}
FIELDS = COLUMNS


def csv_row(
    key: str,
    name: str,
    *,
    email: str = "",
    status: str = "Paid",
    amount: str = "10.00",
    currency: str = "EUR",
    qty: str = "1",
    day: str = "2024-05-01",
    shipped: str = "2024-05-02T09:30:00+02:00",
    gift: str = "false",
    notes: str = "",
) -> list[str]:
    return [
        key,
        name,
        email or f"{key.lower()}@example.com",
        f"Customer {key}",
        status,
        amount,
        currency,
        qty,
        day,
        shipped,
        gift,
        notes,
    ]


def expected_from_csv(row: list[str]) -> dict[str, Any]:
    """What the SDK must parse back for a row written through the CSV."""
    values = dict(zip(COLUMNS, row, strict=True))
    return {
        "parent_id": values["parent_id"],
        "Name": values["Name"],
        "Email": values["Email"],
        "Customer_Name": values["Customer_Name"],
        "Order_Status": choice(values["Order_Status"]),
        "Amount": float(values["Amount"]),
        "Currency_Code": choice(values["Currency_Code"]),
        "Quantity": int(values["Quantity"]),
        "Order_Date": typed_date(date.fromisoformat(values["Order_Date"])),
        "Shipped_At": typed_datetime(datetime.fromisoformat(values["Shipped_At"])),
        "Is_Gift": values["Is_Gift"] == "true",
        **({"Notes": values["Notes"]} if values["Notes"] else {}),
    }


SEED = [
    {
        "parent_id": "LEG-B-001",
        "Name": "Seed one",
        "Email": "seed1@example.com",
        "Order_Status": choice("New"),
        "Amount": 1.5,
        "Quantity": 1,
    },
    {
        "parent_id": "LEG-B-002",
        "Name": "Seed two",
        "Email": "seed2@example.com",
        "Order_Status": choice("New"),
        "Amount": 2.5,
        "Quantity": 2,
    },
]

ROWS = [
    # two updates of the seeded records (matched on parent_id)
    csv_row(
        "LEG-B-001",
        "Seed one (updated)",
        status="Shipped",
        amount="1250.50",
        qty="3",
        gift="true",
        notes="first line\nsecond line, with a comma",
    ),
    csv_row("LEG-B-002", "Seed two (updated)", status="Delivered", amount="0.99", currency="GBP"),
    # six inserts
    csv_row(
        "LEG-B-003",
        "Zoë Ångström",
        amount="19.99",
        currency="USD",
        qty="12",
        day="2023-12-31",
        shipped="2024-01-01T00:00:00+00:00",
    ),
    csv_row(
        "LEG-B-004",
        "Plain order",
        status="New",
        amount="0.00",
        gift="true",
        shipped="2024-02-29T23:59:59-05:00",
    ),
    csv_row(
        "LEG-B-005",
        'Quote "test" order',
        status="Cancelled",
        amount="99999.99",
        currency="JPY",
        qty="0",
    ),
    csv_row(
        "LEG-B-006",
        "Refund",
        status="Refunded",
        amount="42.10",
        currency="INR",
        shipped="2024-06-15T18:45:00+05:30",
    ),
    csv_row("LEG-B-007", "Semicolon; order", qty="250"),
    csv_row("LEG-B-008", "N" * 120),
    # four rows Zoho skips
    csv_row("LEG-B-009", "Bad email", email="not-an-email"),
    csv_row("LEG-B-010", "Unknown status", status="Lost"),
    csv_row("LEG-B-011", ""),
    csv_row("LEG-B-012", "N" * 121),
]
EXPECTED_ERRORS = {
    "LEG-B-009": "INVALID_DATA-Email",
    "LEG-B-010": "INVALID_DATA-Order_Status",
    "LEG-B-011": "MANDATORY_NOT_FOUND-Name",
    "LEG-B-012": "INVALID_DATA-Name",
}
UPDATED = {"LEG-B-001", "LEG-B-002"}
ADDED = {f"LEG-B-00{i}" for i in range(3, 9)}


def test_sdk_bulk_upsert_job(zohosim: Any, tmp_path: Path) -> None:
    mappings = [
        {"api_name": col, "index": i, **({"format": FORMATS[col]} if col in FORMATS else {})}
        for i, col in enumerate(COLUMNS)
    ]
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": SEED, "duplicate_check_fields": ["parent_id"]},
            {
                "op": "upload",
                "rows": [COLUMNS, *ROWS],
                "csv_name": "orders_batch.csv",
                "zip_name": "orders_batch.zip",
            },
            {
                "op": "create_job",
                "operation": "upsert",
                "find_by": "parent_id",
                "field_mappings": mappings,
            },
            {"op": "poll_job", "timeout": 30},
            {"op": "download"},
            {"op": "get_records", "fields": FIELDS, "per_page": 200, "all_pages": True},
        ],
    )

    # -- seed upsert ---------------------------------------------------------------------------
    seed = obj(step(report, 0))
    seed_ids = {}
    for item, sent in zip(seed["data"], SEED, strict=True):
        assert item["$type"] == "SuccessResponse", item
        assert item["action"] == {"$choice": "insert"}
        seed_ids[sent["parent_id"]] = item["details"]["id"]

    # -- upload (§2.3): SuccessResponse, file_id parsed as an int (Long) -----------------------
    up = step(report, 1)
    assert up["status_code"] == 200
    upload = obj(up)
    assert upload["$type"] == "SuccessResponse", upload
    assert upload["status"] == {"$choice": "success"}
    assert upload["code"] == {"$choice": "FILE_UPLOAD_SUCCESS"}
    assert upload["message"] == {"$choice": "file uploaded."}
    file_id = upload["details"]["file_id"]
    assert isinstance(file_id, int) and file_id > 0
    assert upload["details"]["created_time"]["$aware"]

    # -- create job (§3.2): 201, details.id (String) --------------------------------------------
    created = step(report, 2)
    assert created["status_code"] == 201
    job = obj(created)
    assert job["$type"] == "SuccessResponse", job
    assert job["status"] == {"$choice": "success"}
    assert job["code"] == {"$choice": "SUCCESS"}
    assert job["message"] == {"$choice": "success"}
    job_id = job["details"]["id"]
    assert isinstance(job_id, str) and job_id.isdigit()
    created_by = job["details"]["created_by"]
    assert created_by["$type"] == "MinifiedUser"
    assert isinstance(created_by["id"], int) and isinstance(created_by["name"], str)

    # -- job details (§4.2) ---------------------------------------------------------------------
    polled = step(report, 3)
    assert polled["status_code"] == 200
    details = obj(polled)
    assert details["$type"] == "BulkWriteResponse", details
    for seen in polled["statuses_seen"]:
        assert seen in {"ADDED", "IN PROGRESS", "INPROGRESS", "COMPLETED"}, polled["statuses_seen"]
    assert details["status"] == "COMPLETED"
    assert details["id"] == job_id
    assert details["operation"] == "upsert"
    assert details["character_encoding"] == "UTF-8"
    assert details["created_time"]["$aware"]
    assert details["created_by"]["id"] == created_by["id"]
    assert len(details["resource"]) == 1
    resource = details["resource"][0]
    assert resource["$type"] == "Resource"
    assert resource["status"] == {"$choice": "COMPLETED"}
    assert resource["type"] == {"$choice": "data"}
    assert resource["module"]["api_name"] == "Orders"
    assert isinstance(resource["module"].get("id", 0), int)
    echoed = [(m["api_name"], m["index"], m.get("format")) for m in resource["field_mappings"]]
    assert echoed == [(m["api_name"], m["index"], m.get("format")) for m in mappings]
    counts = resource["file"]
    assert counts["$type"] == "File"
    assert counts["status"] == {"$choice": "COMPLETED"}
    assert counts["name"] == "orders_batch.csv"
    assert (
        counts["added_count"],
        counts["updated_count"],
        counts["skipped_count"],
        counts["total_count"],
    ) == (len(ADDED), len(UPDATED), len(EXPECTED_ERRORS), len(ROWS))
    url = details["result"]["download_url"]
    parts = urlsplit(url)
    assert parts.scheme == "http" and f"{parts.scheme}://{parts.netloc}" == zohosim.base_url.rstrip(
        "/"
    )

    # -- result download (§5) -------------------------------------------------------------------
    dl = step(report, 4)
    assert dl["status_code"] == 200
    assert dl["object_type"] == "FileBodyWrapper", dl
    assert dl["file_name"].endswith(".zip"), dl["headers"]
    assert dl["headers"]["Content-Type"].split(";")[0] in {
        "application/zip",
        "application/octet-stream",
    }
    assert len(dl["members"]) == 1, dl["members"]
    table = dl["csv"][dl["members"][0]]
    assert [h.upper() for h in table[0]] == [
        "PARENT_ID",
        "NAME",
        "EMAIL",
        "STATUS",
        "RECORD_ID",
        "ERRORS",
    ]
    assert table[0][:3] == COLUMNS[:3]
    result_rows = table[1:]
    assert len(result_rows) == len(ROWS)

    # -- read back (get_records) and compare field by field ----------------------------------------
    pages = step(report, 5)["pages"]
    records = []
    for page in pages:
        assert page["status_code"] == 200, page
        records.extend(obj(page)["data"])
    by_key = {r["parent_id"]: r for r in records}
    assert set(by_key) == UPDATED | ADDED

    for sent, result in zip(ROWS, result_rows, strict=True):
        key = sent[0]
        assert result[:3] == sent[:3], (result, sent)
        status, record_id, errors = result[3], result[4], result[5]
        if key in EXPECTED_ERRORS:
            assert status.upper() == "SKIPPED", result
            assert record_id == "", result
            assert errors == EXPECTED_ERRORS[key], result
            continue
        assert errors == "", result
        assert status.upper() == ("UPDATED" if key in UPDATED else "ADDED"), result
        record = by_key[key]
        assert str(record["id"]) == record_id
        assert isinstance(record["id"], int)
        if key in UPDATED:
            assert record_id == seed_ids[key]
        assert_record_matches(record, expected_from_csv(sent))


class _Catcher(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    arrived = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


def test_sdk_callback_and_its_body(zohosim: Any, tmp_path: Path) -> None:
    """The SDK's CallBack is accepted; the POSTed body parses as the SDK's job-details model."""
    catcher = type("Catcher", (_Catcher,), {"bodies": [], "arrived": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/zoho/bulk-callback"
        rows = [COLUMNS, *ROWS[2:5]]
        mappings = [
            {"api_name": col, "index": i, **({"format": FORMATS[col]} if col in FORMATS else {})}
            for i, col in enumerate(COLUMNS)
        ]
        report = run_sdk(
            zohosim,
            tmp_path / "job",
            [
                {"op": "upload", "rows": rows},
                {"op": "create_job", "field_mappings": mappings, "callback_url": url},
                {"op": "poll_job", "timeout": 30},
            ],
        )
        polled = obj(step(report, 2))
        assert polled["status"] == "COMPLETED"
        assert polled["callback"]["url"] == url
        assert polled["callback"]["method"] == {"$choice": "post"}
        assert catcher.arrived.wait(10), "no callback arrived"
    finally:
        server.shutdown()
        server.server_close()
    assert len(catcher.bodies) == 1
    body = json.loads(catcher.bodies[0])
    parsed = obj(
        step(run_sdk(zohosim, tmp_path / "parse", [{"op": "parse_job_json", "body": body}]), 0)
    )
    assert parsed["$type"] == "BulkWriteResponse", parsed
    for key in ("id", "status", "operation", "result", "callback"):
        assert parsed[key] == polled[key], key
    assert parsed["resource"][0]["file"] == polled["resource"][0]["file"]
