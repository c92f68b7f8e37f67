"""Referee: upsert and read back Orders with Zoho's official Python SDK, value by value."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.referee.sdkrun import (
    assert_record_matches,
    assert_same_value,
    choice,
    obj,
    run_sdk,
    step,
    typed_date,
    typed_datetime,
)

FIELDS = [
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
STATUSES = ["New", "Paid", "Shipped", "Delivered", "Cancelled", "Refunded"]
CURRENCIES = ["USD", "EUR", "GBP", "INR", "JPY"]
IST = timezone(timedelta(hours=5, minutes=30))
NAMES = ["Zoë Ångström", "José Müller", "李雷", "O'Brien & Sons", "Plain Customer"]


def order(key: str, i: int, **override: Any) -> dict[str, Any]:
    """A valid Orders record in the driver's typed encoding."""
    rec: dict[str, Any] = {
        "parent_id": key,
        "Name": f"Order {key}",
        "Email": f"buyer{i}@example.com",
        "Customer_Name": NAMES[i % len(NAMES)],
        "Order_Status": choice(STATUSES[i % len(STATUSES)]),
        "Amount": float(f"{i * 37 % 5000}.{i * 13 % 100:02d}"),
        "Currency_Code": choice(CURRENCIES[i % len(CURRENCIES)]),
        "Quantity": i % 9,
        "Order_Date": typed_date(date(2024, 1, 1) + timedelta(days=i * 3)),
        "Shipped_At": typed_datetime(
            datetime(2024, 2, 1, 10, 30, tzinfo=IST) + timedelta(hours=i * 7)
        ),
        "Is_Gift": i % 3 == 0,
        "Notes": f"line one of {key}\nline two, ünïcödé" if i % 4 == 0 else f"note {i}",
    }
    rec.update(override)
    return {k: v for k, v in rec.items() if v is not None}


def seed_records() -> list[dict[str, Any]]:
    return [order(f"LEG-U-{n:03d}", n) for n in range(1, 23)]


def mixed_batch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """100 records and, per record, what the SDK must parse back for it."""
    batch: list[dict[str, Any]] = []
    expect: list[dict[str, Any]] = []
    # 0-19: updates of seeded records matched on parent_id; even ones leave Name out.
    for n in range(1, 21):
        rec = order(f"LEG-U-{n:03d}", 500 + n)
        if n % 2 == 0:
            del rec["Name"]
        batch.append(rec)
        expect.append({"action": "update", "key": rec["parent_id"]})
    # 20-87: inserts; one reuses a seeded record's Name, which is not a duplicate-check field here.
    for n in range(20, 88):
        rec = order(f"LEG-U-N{n:03d}", n)
        if n == 20:
            rec["Name"] = "Order LEG-U-005"
        batch.append(rec)
        expect.append({"action": "insert", "key": rec["parent_id"]})
    # 88-92: invalid records.
    batch.append(order("LEG-U-N088", 88, Email="not-an-email"))
    expect.append({"code": "INVALID_DATA", "field": "Email"})
    batch.append(order("LEG-U-N089", 89, Order_Status=choice("Lost")))
    expect.append({"code": "INVALID_DATA", "field": "Order_Status"})
    batch.append(order("LEG-U-N090", 90, Name="N" * 121))
    expect.append({"code": "INVALID_DATA", "field": "Name", "maximum_length": "120"})
    missing = order("LEG-U-N091", 91)
    del missing["Name"]
    batch.append(missing)
    expect.append({"code": "MANDATORY_NOT_FOUND", "field": "Name"})
    batch.append(order("LEG-U-021", 921, Currency_Code=choice("CHF")))
    expect.append({"code": "INVALID_DATA", "field": "Currency_Code"})
    # 93: update without Name is fine.
    upd = order("LEG-U-022", 922)
    del upd["Name"]
    batch.append(upd)
    expect.append({"action": "update", "key": "LEG-U-022"})
    # 94-99: more inserts.
    for n in range(94, 100):
        rec = order(f"LEG-U-N{n:03d}", n)
        batch.append(rec)
        expect.append({"action": "insert", "key": rec["parent_id"]})
    assert len(batch) == 100
    return batch, expect


def check_success(item: dict[str, Any], action: str) -> None:
    assert item["$type"] == "SuccessResponse", item
    assert item["status"] == {"$choice": "success"}
    assert item["code"] == {"$choice": "SUCCESS"}
    assert item["action"] == {"$choice": action}
    assert item["message"] == {
        "$choice": "record added" if action == "insert" else "record updated"
    }
    details = item["details"]
    assert isinstance(details["id"], str) and details["id"].isdigit(), details
    for stamp in ("Created_Time", "Modified_Time"):
        assert details[stamp]["$aware"], details
    for who in ("Created_By", "Modified_By"):
        assert details[who]["$type"] == "MinifiedUser", details
        assert isinstance(details[who]["id"], int) and isinstance(details[who]["name"], str)
    created = datetime.fromisoformat(details["Created_Time"]["$datetime"])
    modified = datetime.fromisoformat(details["Modified_Time"]["$datetime"])
    assert modified >= created
    if action == "insert":
        assert created == modified
        assert item.get("duplicate_field") is None, item
    else:
        assert item["duplicate_field"] == "parent_id", item


def check_error(item: dict[str, Any], index: int, want: dict[str, Any]) -> None:
    assert item["$type"] == "APIException", item
    assert item["status"] == {"$choice": "error"}
    assert item["code"] == {"$choice": want["code"]}
    message = item["message"]["$choice"]
    assert message == (
        "invalid data" if want["code"] == "INVALID_DATA" else "required field not found"
    )
    details = item["details"]
    assert details["api_name"] == want["field"], details
    assert details["json_path"] == f"$.data[{index}].{want['field']}", details
    if "maximum_length" in want:
        # The SDK models maximum_length as a String (§13.9).
        assert details["maximum_length"] == want["maximum_length"], details


def test_sdk_upsert_mixed_batch_and_read_back(zohosim: Any, tmp_path: Path) -> None:
    seeds = seed_records()
    batch, expect = mixed_batch()
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": seeds, "duplicate_check_fields": ["parent_id"]},
            {"op": "upsert", "records": batch, "duplicate_check_fields": ["parent_id"]},
            {"op": "get_records", "fields": FIELDS, "per_page": 40, "all_pages": True},
        ],
        tz="Asia/Kolkata",  # the SDK sends datetimes in local time: exercise a +05:30 offset
    )

    # -- seed: all inserts, HTTP 200 (§6.6) ----------------------------------------------------
    first = step(report, 0)
    assert first["status_code"] == 200
    seeded = obj(first)
    assert seeded["$type"] == "ActionWrapper"
    assert len(seeded["data"]) == len(seeds)
    seed_ids: dict[str, str] = {}
    seed_created: dict[str, str] = {}
    for item, rec in zip(seeded["data"], seeds, strict=True):
        check_success(item, "insert")
        seed_ids[rec["parent_id"]] = item["details"]["id"]
        seed_created[rec["parent_id"]] = item["details"]["Created_Time"]["$datetime"]
    assert len(set(seed_ids.values())) == len(seeds)

    # -- the mixed batch: 207, one item per record in request order ------------------------------
    second = step(report, 1)
    assert second["status_code"] == 207
    mixed = obj(second)
    assert mixed["$type"] == "ActionWrapper"
    assert len(mixed["data"]) == 100
    final: dict[str, dict[str, Any]] = {k: dict(r) for k, r in zip(seed_ids, seeds, strict=True)}
    ids: dict[str, str] = dict(seed_ids)
    for index, (item, rec, want) in enumerate(zip(mixed["data"], batch, expect, strict=True)):
        if "code" in want:
            check_error(item, index, want)
            continue
        check_success(item, want["action"])
        key = want["key"]
        if want["action"] == "update":
            assert item["details"]["id"] == seed_ids[key]
            created = datetime.fromisoformat(item["details"]["Created_Time"]["$datetime"])
            assert created == datetime.fromisoformat(seed_created[key])
            final[key].update(rec)
        else:
            assert key not in ids
            ids[key] = item["details"]["id"]
            final[key] = dict(rec)
    assert len(final) == 22 + 68 + 6

    # -- read back, paged ----------------------------------------------------------------------
    pages = step(report, 2)["pages"]
    assert len(pages) == math.ceil(len(final) / 40)
    records: list[dict[str, Any]] = []
    for number, page in enumerate(pages, start=1):
        assert page["status_code"] == 200, page
        body = obj(page)
        assert body["$type"] == "ResponseWrapper"
        info = body["info"]
        assert info["$type"] == "Info"
        assert info["page"] == number
        assert info["per_page"] == 40
        assert info["count"] == len(body["data"])
        assert info["more_records"] is (number < len(pages))
        records.extend(body["data"])
    by_key = {r["parent_id"]: r for r in records}
    assert len(by_key) == len(records) == len(final)
    assert set(by_key) == set(final)
    for key, rec in final.items():
        parsed = by_key[key]
        assert parsed["id"] == int(ids[key])
        assert_record_matches(parsed, rec)
    # Records the batch refused left no trace, and the refused update kept its old values.
    for key in ("LEG-U-N088", "LEG-U-N089", "LEG-U-N090", "LEG-U-N091"):
        assert key not in by_key
    assert_same_value(
        "Currency_Code", by_key["LEG-U-021"]["Currency_Code"], seeds[20]["Currency_Code"]
    )

    # -- get_record by id ------------------------------------------------------------------------
    picks = ["LEG-U-002", "LEG-U-N020", "LEG-U-N099"]
    report2 = run_sdk(
        zohosim,
        tmp_path / "one",
        [{"op": "get_record", "id": ids[k]} for k in picks],
        tz="America/New_York",
    )
    for index, key in enumerate(picks):
        out = step(report2, index)
        assert out["status_code"] == 200
        body = obj(out)
        assert body["$type"] == "ResponseWrapper"
        assert len(body["data"]) == 1
        parsed = body["data"][0]
        assert parsed["id"] == int(ids[key])
        assert_record_matches(parsed, final[key])


def test_sdk_upsert_all_invalid_is_400_with_items(zohosim: Any, tmp_path: Path) -> None:
    batch = [
        order("LEG-X-1", 1, Email="still@not@valid"),
        order("LEG-X-2", 2, Order_Status=choice("Lost")),
        {k: v for k, v in order("LEG-X-3", 3).items() if k != "Name"},
    ]
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": batch, "duplicate_check_fields": ["parent_id"]},
            {"op": "get_records", "fields": FIELDS, "per_page": 200},
        ],
    )
    out = step(report, 0)
    assert out["status_code"] == 400
    body = obj(out)
    assert body["$type"] == "ActionWrapper", body
    wants = [
        {"code": "INVALID_DATA", "field": "Email"},
        {"code": "INVALID_DATA", "field": "Order_Status"},
        {"code": "MANDATORY_NOT_FOUND", "field": "Name"},
    ]
    assert len(body["data"]) == len(wants)
    for index, (item, want) in enumerate(zip(body["data"], wants, strict=True)):
        check_error(item, index, want)
    # Nothing was written: an empty module answers 204 and the SDK parses no object.
    read = report["steps"][1]
    assert read["pages"][0]["status_code"] == 204, read


def test_sdk_upsert_duplicate_unique_value(zohosim: Any, tmp_path: Path) -> None:
    """Matching on Name (listed first) and moving parent_id onto another record's value."""
    seeds = [order("LEG-D-1", 1), order("LEG-D-2", 2)]
    clash = order("LEG-D-2", 3, Name="Order LEG-D-1")  # matches record 1 by Name
    rename = order("LEG-D-9", 4, Name="Order LEG-D-2")  # matches record 2 by Name
    report = run_sdk(
        zohosim,
        tmp_path,
        [
            {"op": "upsert", "records": seeds, "duplicate_check_fields": ["parent_id"]},
            {"op": "upsert", "records": [clash, rename], "duplicate_check_fields": ["Name"]},
            {"op": "get_records", "fields": FIELDS, "per_page": 200},
        ],
    )
    ids = [item["details"]["id"] for item in obj(step(report, 0))["data"]]
    out = step(report, 1)
    assert out["status_code"] == 207
    first, second = obj(out)["data"]
    # Record 1 matched by Name; its new parent_id belongs to record 2 -> DUPLICATE_DATA.
    assert first["$type"] == "APIException", first
    assert first["code"] == {"$choice": "DUPLICATE_DATA"}
    assert first["message"] == {"$choice": "duplicate data"}
    details = first["details"]
    assert details["api_name"] == "parent_id"
    assert details["json_path"] == "$.data[0].parent_id"
    dup = details["duplicate_record"]
    assert dup["$type"] == "DuplicateRecord"
    assert dup["id"] == int(ids[1])
    assert dup["module"]["api_name"] == "Orders"
    assert isinstance(dup["module"]["id"], int)
    assert isinstance(dup["owner"]["id"], int)  # SDK member name for "Owner"
    # Record 2 matched by Name and takes a fresh parent_id: an update reporting Name.
    assert second["$type"] == "SuccessResponse", second
    assert second["action"] == {"$choice": "update"}
    assert second["duplicate_field"] == "Name"
    assert second["details"]["id"] == ids[1]
    records = {r["parent_id"]: r for r in obj(step(report, 2)["pages"][0])["data"]}
    assert set(records) == {"LEG-D-1", "LEG-D-9"}
    assert records["LEG-D-1"]["id"] == int(ids[0])
    assert_record_matches(records["LEG-D-1"], seeds[0])
    assert_record_matches(records["LEG-D-9"], rename)
