"""Org, field metadata, record reads, URL and method errors."""

from __future__ import annotations

from tests.zohosim.helpers import Api, error
from zohosim.testing import SimProcess


def test_org_zgid_is_a_string(api: Api, zohosim: SimProcess) -> None:
    r = api.get("/crm/v8/org")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    (org,) = r.json()["org"]
    assert org["zgid"] == zohosim.zgid
    assert isinstance(org["zgid"], str)
    assert org["id"].isdigit()


def test_fields_metadata_shape(api: Api) -> None:
    r = api.get("/crm/v8/settings/fields", params={"module": "Orders"})
    assert r.status_code == 200
    fields = {f["api_name"]: f for f in r.json()["fields"]}
    for name in ("Name", "parent_id", "Customer_Name", "Email", "Order_Status", "Amount",
                 "Currency_Code", "Quantity", "Order_Date", "Shipped_At", "Is_Gift", "Notes"):
        assert name in fields
    assert all(f["id"].isdigit() for f in fields.values())
    assert fields["parent_id"]["unique"] == {"casesensitive": "false"}
    assert fields["Name"]["unique"] == {}
    assert fields["Name"]["system_mandatory"] is True
    assert fields["Name"]["length"] == 120
    assert fields["Notes"]["data_type"] == "textarea"
    assert fields["Notes"]["length"] == 32000
    assert fields["Amount"]["data_type"] == "currency"
    assert fields["Is_Gift"]["data_type"] == "boolean"
    assert fields["Shipped_At"]["data_type"] == "datetime"
    picks = [p["actual_value"] for p in fields["Order_Status"]["pick_list_values"]]
    assert picks == ["-None-", "New", "Paid", "Shipped", "Delivered", "Cancelled", "Refunded"]
    assert all(p["id"].isdigit() for p in fields["Order_Status"]["pick_list_values"])


def test_fields_errors(api: Api) -> None:
    assert error(api.get("/crm/v8/settings/fields")) == (400, "REQUIRED_PARAM_MISSING")
    assert error(api.get("/crm/v8/settings/fields", params={"module": "Nope"})) == (
        400, "INVALID_MODULE")


def _seed(api: Api, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 100):
        recs = [{"Name": f"SO-{i}", "parent_id": str(i), "Amount": i}
                for i in range(start, min(n, start + 100))]
        r = api.upsert(recs)
        assert r.status_code == 200, r.text
        ids += [d["details"]["id"] for d in r.json()["data"]]
    return ids


def test_records_paging(api: Api) -> None:
    assert api.get("/crm/v8/Orders", params={"fields": "Name"}).status_code == 204
    ids = _seed(api, 250)
    r = api.get("/crm/v8/Orders", params={"fields": "Name,parent_id", "per_page": 200})
    body = r.json()
    assert r.status_code == 200
    info = body["info"]
    assert {k: info[k] for k in ("per_page", "count", "page", "more_records")} == {
        "per_page": 200, "count": 200, "page": 1, "more_records": True}
    assert info["next_page_token"]
    assert [d["id"] for d in body["data"]] == ids[:200]
    assert set(body["data"][0]) == {"id", "Name", "parent_id"}
    r = api.get("/crm/v8/Orders", params={"fields": "Name", "page": 2, "per_page": 200})
    info = r.json()["info"]
    assert (info["count"], info["page"], info["more_records"], info["next_page_token"]) == (
        50, 2, False, None)
    assert api.get("/crm/v8/Orders", params={"fields": "Name", "page": 3}).status_code == 204


def test_records_errors(api: Api) -> None:
    assert error(api.get("/crm/v8/Orders")) == (400, "REQUIRED_PARAM_MISSING")
    assert error(api.get("/crm/v8/Orders", params={"fields": "Name", "per_page": 201})) == (
        400, "INVALID_DATA")
    assert error(api.get("/crm/v8/Orders", params={"fields": "Bogus"})) == (400, "INVALID_DATA")
    assert error(api.get("/crm/v8/Nope", params={"fields": "Name"})) == (400, "INVALID_MODULE")


def test_record_by_id(api: Api) -> None:
    (rid,) = _seed(api, 1)
    r = api.get(f"/crm/v8/Orders/{rid}")
    (rec,) = r.json()["data"]
    assert rec["id"] == rid
    assert rec["Name"] == "SO-0"
    assert rec["Amount"] == 0
    assert rec["Created_Time"] == rec["Modified_Time"]
    assert rec["Owner"]["id"].isdigit() and rec["Created_By"] == rec["Modified_By"]
    r = api.get("/crm/v8/Orders", params={"fields": "Created_By,Owner"})
    assert set(r.json()["data"][0]) == {"id", "Created_By", "Owner"}
    assert api.get("/crm/v8/Orders/5725767000000999999").status_code == 204


def test_unknown_url_and_wrong_method(api: Api) -> None:
    assert error(api.get("/crm/v8/settings/nothing")) == (404, "INVALID_URL_PATTERN")
    assert error(api.get("/crm/v2/org")) == (404, "INVALID_URL_PATTERN")
    assert error(api.post("/crm/v8/org")) == (400, "INVALID_REQUEST_METHOD")
    assert error(api.get("/crm/v8/Orders/upsert")) == (400, "INVALID_REQUEST_METHOD")


def test_double_slash_paths_are_served(api: Api, zohosim: SimProcess) -> None:
    r = api.http.get(f"{zohosim.base_url}//crm/v8/org", headers=api.headers(), timeout=10)
    assert r.status_code == 200


def test_modules(api: Api) -> None:
    (mod,) = api.get("/crm/v8/settings/modules").json()["modules"]
    assert (mod["api_name"], mod["api_supported"]) == ("Orders", True)
    assert mod["id"].isdigit()
    assert api.get("/crm/v8/settings/modules/Orders").json()["modules"][0]["api_name"] == "Orders"
    assert error(api.get("/crm/v8/settings/modules/Nope")) == (400, "INVALID_MODULE")
    r = api.get("/crm/v8/settings/modules", headers={
        **api.headers(), "If-Modified-Since": "2026-01-01T00:00:00+00:00"})
    assert (r.status_code, r.content) == (304, b"")


def test_search_and_ids(api: Api) -> None:
    ids = _seed(api, 5)
    r = api.get("/crm/v8/Orders/search", params={"criteria": "(parent_id:equals:3)"})
    assert [d["id"] for d in r.json()["data"]] == [ids[3]]
    r = api.get("/crm/v8/Orders/search", params={
        "criteria": "((parent_id:in:1,2)or(Name:starts_with:so-4))", "fields": "Name"})
    assert [d["Name"] for d in r.json()["data"]] == ["SO-1", "SO-2", "SO-4"]
    assert set(r.json()["data"][0]) == {"id", "Name"}
    r = api.get("/crm/v8/Orders/search", params={
        "criteria": "((Amount:greater_than:2)and(Amount:less_than:4))"})
    assert [d["parent_id"] for d in r.json()["data"]] == ["3"]
    assert api.get("/crm/v8/Orders/search",
                   params={"criteria": "(parent_id:equals:99)"}).status_code == 204
    assert error(api.get("/crm/v8/Orders/search", params={"criteria": "parent_id="})) == (
        400, "INVALID_QUERY")
    assert error(api.get("/crm/v8/Orders/search")) == (400, "REQUIRED_PARAM_MISSING")
    r = api.get("/crm/v8/Orders", params={"fields": "Name", "ids": f"{ids[4]},{ids[0]},123"})
    assert [d["Name"] for d in r.json()["data"]] == ["SO-4", "SO-0"]


def test_page_limit_and_page_token(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(page_limit=100)
    ids = _seed(api, 130)
    assert error(api.get("/crm/v8/Orders", params={"fields": "Name", "page": 3,
                                                     "per_page": 50})) == (
        400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED")
    got: list[str] = []
    params: dict[str, str | int] = {"fields": "Name", "per_page": 50}
    while True:
        body = api.get("/crm/v8/Orders", params=params).json()
        got += [d["id"] for d in body["data"]]
        if not body["info"]["more_records"]:
            break
        params = {"fields": "Name", "per_page": 50, "page_token": body["info"]["next_page_token"]}
    assert got == ids
    assert error(api.get("/crm/v8/Orders", params={"fields": "Name", "page_token": "zz"})) == (
        400, "INVALID_DATA")


def test_sort_by(api: Api, zohosim: SimProcess) -> None:
    ids = _seed(api, 3)
    api.upsert([{"Name": "SO-0", "parent_id": "0", "Notes": "touched"}],
               duplicate_check_fields=["parent_id"])
    r = api.get("/crm/v8/Orders", params={"fields": "Name", "sort_by": "id",
                                          "sort_order": "desc"})
    assert [d["id"] for d in r.json()["data"]] == ids[::-1]
    assert (r.json()["info"]["sort_by"], r.json()["info"]["sort_order"]) == ("id", "desc")
    r = api.get("/crm/v8/Orders", params={"fields": "Name", "sort_by": "Modified_Time",
                                          "sort_order": "desc"})
    assert r.json()["data"][0]["id"] in ids
    assert error(api.get("/crm/v8/Orders", params={"fields": "Name", "sort_by": "Name"})) == (
        400, "INVALID_DATA")
    # sorted reads belong to the sub-concurrency group
    zohosim.admin.configure(sub_concurrency=0)
    assert error(api.get("/crm/v8/Orders", params={"fields": "Name", "sort_by": "id"})) == (
        429, "TOO_MANY_REQUESTS")
    assert api.get("/crm/v8/Orders", params={"fields": "Name"}).status_code == 200
