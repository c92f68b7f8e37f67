"""Upsert Records API: §6 semantics, validation per type, HTTP status per outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.zohosim.helpers import Api, error
from zohosim.testing import SimProcess


def rec(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"Name": f"SO-{i}", "parent_id": f"P{i}", "Customer_Name": "Ann",
                         "Email": "ann@example.com", "Order_Status": "Paid", "Amount": 10.5,
                         "Currency_Code": "EUR", "Quantity": 2, "Order_Date": "2024-05-01",
                         "Shipped_At": "2024-05-02T10:00:00+05:30", "Is_Gift": True,
                         "Notes": "fragile"}
    r.update(over)
    return r


def test_insert_then_update(api: Api, zohosim: SimProcess) -> None:
    r = api.upsert([rec(1), rec(2)], duplicate_check_fields=["parent_id"])
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    items = r.json()["data"]
    assert [i["action"] for i in items] == ["insert", "insert"]
    assert items[0]["duplicate_field"] is None
    assert items[0]["message"] == "record added"
    d = items[0]["details"]
    assert len(d["id"]) == 19 and d["id"].isdigit()
    assert d["Created_Time"] == d["Modified_Time"]
    assert d["Created_By"]["id"].isdigit()
    r = api.upsert([rec(1, Amount=99)], duplicate_check_fields=["parent_id"])
    (item,) = r.json()["data"]
    assert (item["action"], item["duplicate_field"], item["message"]) == (
        "update", "parent_id", "record updated")
    assert item["details"]["id"] == d["id"]
    stored = {x["parent_id"]: x for x in zohosim.admin.records()}
    assert stored["P1"]["Amount"] == 99
    assert stored["P1"]["Is_Gift"] is True
    assert stored["P1"]["Shipped_At"] == "2024-05-02T04:30:00+00:00"  # in the org's time zone
    assert len(stored) == 2


def test_body_without_content_type(api: Api) -> None:
    r = api.post("/crm/v8/Orders/upsert", data=json.dumps({"data": [rec(1)]}).encode(),
                 headers={**api.headers(), "Content-Type": ""})
    assert r.status_code == 200
    assert r.json()["data"][0]["status"] == "success"


def test_name_is_used_only_when_listed(api: Api, zohosim: SimProcess) -> None:
    api.upsert([rec(1)])
    # same Name, new parent_id: listing parent_id only -> Name not used -> insert
    r = api.upsert([rec(1, parent_id="P-other")], duplicate_check_fields=["parent_id"])
    assert r.json()["data"][0]["action"] == "insert"
    # no duplicate_check_fields -> Name (system field) first -> update
    r = api.upsert([rec(1, parent_id="P-third")])
    item = r.json()["data"][0]
    assert (item["action"], item["duplicate_field"]) == ("update", "Name")
    # listed Name then the unique fields
    r = api.upsert([rec(7, Name="SO-1", parent_id="P-third")],
                   duplicate_check_fields=["Name"])
    assert r.json()["data"][0]["duplicate_field"] == "Name"
    assert len(zohosim.admin.records()) == 2


def test_duplicate_data_details(api: Api) -> None:
    api.upsert([rec(1), rec(2)], duplicate_check_fields=["parent_id"])
    # match record 2 through Name, then try to give it record 1's parent_id
    r = api.upsert([{"Name": "SO-2", "parent_id": "P1"}], duplicate_check_fields=["Name",
                                                                                  "parent_id"])
    assert r.status_code == 400
    (item,) = r.json()["data"]
    assert item["code"] == "DUPLICATE_DATA"
    assert item["message"] == "duplicate data"
    assert item["details"]["api_name"] == "parent_id"
    assert item["details"]["json_path"] == "$.data[0].parent_id"
    assert item["details"]["duplicate_record"]["id"].isdigit()


def test_unique_match_is_case_insensitive(api: Api) -> None:
    api.upsert([rec(1, parent_id="abc")], duplicate_check_fields=["parent_id"])
    r = api.upsert([rec(1, parent_id="ABC")], duplicate_check_fields=["parent_id"])
    assert r.json()["data"][0]["action"] == "update"


INVALID = [
    ("Customer_Name", "x" * 101, {"maximum_length": 100}),
    ("Name", "x" * 121, {"maximum_length": 120}),
    ("Notes", "x" * 32001, {"maximum_length": 32000}),
    ("Email", "not-an-email", {"expected_data_type": "email"}),
    ("Order_Status", "Lost", {"expected_data_type": "picklist"}),
    ("Currency_Code", "XXX", {"expected_data_type": "picklist"}),
    ("Order_Date", "01/05/2024", {"expected_data_type": "date"}),
    ("Order_Date", "2024-02-30", {"expected_data_type": "date"}),
    ("Shipped_At", "2024-05-02 10:00:00", {"expected_data_type": "datetime"}),
    ("Shipped_At", "2024-05-02T10:00:00", {"expected_data_type": "datetime"}),
    ("Quantity", "two", {"expected_data_type": "integer"}),
    ("Quantity", 1.5, {"expected_data_type": "integer"}),
    ("Quantity", 1234567890, {"maximum_length": 9}),
    ("Amount", "ten", {"expected_data_type": "currency"}),
    ("Amount", True, {"expected_data_type": "currency"}),
    ("Is_Gift", "false", {"expected_data_type": "boolean"}),
]


@pytest.mark.parametrize(("field", "value", "extra"), INVALID)
def test_invalid_data(api: Api, field: str, value: Any, extra: dict[str, Any]) -> None:
    r = api.upsert([rec(1), rec(2, **{field: value})], duplicate_check_fields=["parent_id"])
    assert r.status_code == 207
    ok, bad = r.json()["data"]
    assert ok["status"] == "success"
    assert bad == {"code": "INVALID_DATA", "message": "invalid data", "status": "error",
                   "details": {**extra, "api_name": field, "json_path": f"$.data[1].{field}"}}


def test_valid_edge_values(api: Api, zohosim: SimProcess) -> None:
    r = api.upsert([rec(1, Shipped_At="2024-05-02T10:00:00Z", Amount="12.345", Quantity="7",
                        Customer_Name="x" * 100)])
    assert r.status_code == 200, r.text
    (stored,) = zohosim.admin.records()
    assert stored["Shipped_At"] == "2024-05-02T10:00:00+00:00"
    assert stored["Amount"] == 12.35
    assert stored["Quantity"] == 7


def test_mandatory_not_found_on_insert_only(api: Api) -> None:
    r = api.upsert([{"parent_id": "P9"}])
    assert r.status_code == 400
    assert r.json()["data"][0] == {
        "code": "MANDATORY_NOT_FOUND", "message": "required field not found", "status": "error",
        "details": {"api_name": "Name", "json_path": "$.data[0].Name"}}
    api.upsert([rec(9, parent_id="P9")])
    r = api.upsert([{"parent_id": "P9", "Amount": 3}], duplicate_check_fields=["parent_id"])
    assert r.json()["data"][0]["action"] == "update"
    r = api.upsert([{"parent_id": "P9", "Name": None}], duplicate_check_fields=["parent_id"])
    assert r.json()["data"][0]["code"] == "MANDATORY_NOT_FOUND"


def test_results_in_request_order(api: Api) -> None:
    recs = [rec(i) if i % 3 else rec(i, Email="bad") for i in range(30)]
    r = api.upsert(recs, duplicate_check_fields=["parent_id"])
    assert r.status_code == 207
    statuses = [d["status"] for d in r.json()["data"]]
    assert statuses == ["error" if i % 3 == 0 else "success" for i in range(30)]


def test_request_level_errors(api: Api) -> None:
    assert error(api.upsert([rec(i) for i in range(101)])) == (400, "LIMIT_EXCEEDED")
    assert error(api.post("/crm/v8/Orders/upsert", json={})) == (400, "MANDATORY_NOT_FOUND")
    assert error(api.post("/crm/v8/Orders/upsert", json={"data": []})) == (400, "INVALID_DATA")
    assert error(api.post("/crm/v8/Orders/upsert", data=b"{nope")) == (400, "INVALID_DATA")
    assert error(api.upsert([rec(1)], duplicate_check_fields=["Email"])) == (400, "INVALID_DATA")
    assert error(api.upsert([rec(1)], duplicate_check_fields=["Bogus"])) == (400, "INVALID_DATA")
    r = api.post("/crm/v8/Nope/upsert", json={"data": [rec(1)]})
    assert r.status_code == 400
    assert r.json()["data"][0]["code"] == "INVALID_MODULE"


def test_upsert_credits(api: Api, zohosim: SimProcess) -> None:
    api.upsert([rec(i) for i in range(100)])  # 10
    api.upsert([rec(i) for i in range(11)])  # 2
    api.upsert([rec(1)])  # 1
    api.upsert([{"Email": "bad"}])  # all failed, still charged: 1
    api.upsert([rec(i) for i in range(101)])  # request-level error: not charged
    c = zohosim.admin.credits()
    assert c["by_api"] == {"upsert": 14}
    assert c["used_24h"] == 14
    assert c["calls_by_api"]["upsert"] == 5


def test_datetimes_follow_the_time_zone_setting(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(time_zone="Asia/Kolkata")
    api.upsert([rec(1, Shipped_At="2024-05-02T10:00:00Z")])
    (stored,) = zohosim.admin.records()
    assert stored["Shipped_At"] == "2024-05-02T15:30:00+05:30"
    assert stored["Created_Time"].endswith("+05:30")
    assert api.get("/crm/v8/org").json()["org"][0]["time_zone"] == "Asia/Kolkata"
    zohosim.admin.configure(time_zone="")  # keep offsets as sent
    api.upsert([rec(1, Shipped_At="2024-05-02T10:00:00-04:00")])
    assert zohosim.admin.records()[0]["Shipped_At"] == "2024-05-02T10:00:00-04:00"
    with pytest.raises(requests.HTTPError):
        zohosim.admin.configure(time_zone="Mars/Olympus")
