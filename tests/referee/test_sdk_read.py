"""Referee: record reads through the SDK — page_token paging, sorting, system fields, time zone."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from tests.referee.sdkrun import assert_same_value, obj, run_sdk, step, typed_datetime
from zohosim.testing import SimProcess

IST = timezone(timedelta(hours=5, minutes=30))


def test_sdk_pages_with_page_token(zohosim: Any, tmp_path: Path) -> None:
    zohosim.admin.configure(page_limit=20, time_zone="America/New_York")
    sent = [
        {
            "parent_id": f"LEG-P-{i:02d}",
            "Name": f"Order P-{i:02d}",
            "Quantity": i,
            "Shipped_At": typed_datetime(
                datetime(2024, 2, 1, 10, 30, tzinfo=IST) + timedelta(hours=i)
            ),
        }
        for i in range(50)
    ]
    fields = ["parent_id", "Quantity", "Shipped_At", "Owner", "Created_By", "Modified_By"]
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": sent[:25], "duplicate_check_fields": ["parent_id"]},
            {"op": "upsert", "records": sent[25:], "duplicate_check_fields": ["parent_id"]},
            {
                "op": "get_records",
                "fields": fields,
                "per_page": 10,
                "all_pages": True,
                "use_page_token": True,
                "sort_by": "id",
                "sort_order": "desc",
            },
            {"op": "get_records", "fields": fields, "per_page": 10, "page": 3},
        ],
    )
    pages = step(report, 2)["pages"]
    assert len(pages) == 5
    records: list[dict[str, Any]] = []
    for number, page in enumerate(pages, start=1):
        assert page["status_code"] == 200, page
        body = obj(page)
        info = body["info"]
        assert info["count"] == len(body["data"]) == 10
        assert info["sort_by"] == "id" and info["sort_order"] == "desc"
        last = number == len(pages)
        assert info["more_records"] is not last
        if last:
            assert info["next_page_token"] is None
        else:
            assert isinstance(info["next_page_token"], str) and info["next_page_token"]
            assert info["page_token_expiry"]["$aware"]
        records.extend(body["data"])
    ids = [r["id"] for r in records]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 50
    assert [r["parent_id"] for r in records] == [s["parent_id"] for s in reversed(sent)]
    for parsed, rec in zip(records, reversed(sent), strict=True):
        assert parsed["Quantity"] == rec["Quantity"]
        # returned in the org's time zone; the same instant once the SDK has parsed it
        assert_same_value("Shipped_At", parsed["Shipped_At"], rec["Shipped_At"])
        for who in ("Owner", "Created_By", "Modified_By"):
            user = parsed[who]
            assert user["$type"] == "MinifiedUser", user
            assert isinstance(user["id"], int) and isinstance(user["name"], str)
    # Beyond page_limit without page_token: Zoho's error, parsed as the SDK's APIException.
    beyond = step(report, 3)["pages"][0]
    assert beyond["status_code"] == 400
    error = obj(beyond)
    assert error["$type"] == "APIException"
    assert error["code"] == {"$choice": "DISCRETE_PAGINATION_LIMIT_EXCEEDED"}


def test_sdk_long_integer_field(tmp_path: Path) -> None:
    # Long Integer (bigint) values go out as JSON numbers from the SDK and come back as strings
    # (§13.10); beyond 2**53 they must survive exactly.
    schema = json.loads(
        resources.files("zohosim").joinpath("orders_schema.json").read_text("utf-8")
    )
    schema["modules"][0]["fields"].append(
        {"api_name": "Legacy_Id", "field_label": "Legacy Id", "data_type": "bigint", "unique": True}
    )
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(json.dumps(schema), encoding="utf-8")
    big = 2**53 + 1
    sent = [
        {"parent_id": "LEG-L-1", "Name": "Order L-1", "Legacy_Id": big},
        {"parent_id": "LEG-L-2", "Name": "Order L-2", "Legacy_Id": 7},
    ]
    with SimProcess(job_speed="instant", extra_args=["--schema", str(schema_path)]) as sim:
        report = run_sdk(
            sim,
            tmp_path / "sdk",
            [
                {"op": "upsert", "records": sent, "duplicate_check_fields": ["parent_id"]},
                {"op": "get_records", "fields": ["parent_id", "Name", "Legacy_Id"]},
            ],
        )
        raw = sim.admin.records("Orders")
    items = obj(step(report, 0))["data"]
    assert [i["action"] for i in items] == [{"$choice": "insert"}] * 2, items
    page = step(report, 1)["pages"][0]
    by_key = {r["parent_id"]: r for r in obj(page)["data"]}
    for rec in sent:
        assert_same_value("Legacy_Id", by_key[rec["parent_id"]]["Legacy_Id"], rec["Legacy_Id"])
    wire = {r["parent_id"]: r["Legacy_Id"] for r in page["raw"]["data"]}
    assert wire == {"LEG-L-1": str(big), "LEG-L-2": "7"}
    assert len(raw) == 2
