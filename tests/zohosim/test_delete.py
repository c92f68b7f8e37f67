"""Delete Records (``DELETE /crm/v8/{module}?ids=…``) over HTTP: items, limits, credits."""

from __future__ import annotations

from tests.zohosim.helpers import Api, T
from tests.zohosim.test_upsert import rec
from zohosim.testing import SimProcess


def _ids(api: Api, n: int) -> list[str]:
    answer = api.upsert([rec(i) for i in range(n)]).json()["data"]
    return [str(item["details"]["id"]) for item in answer]


def _delete(api: Api, ids: list[str], module: str = "Orders") -> tuple[int, dict]:
    r = api.http.delete(
        f"{api.base}/crm/v8/{module}", params={"ids": ",".join(ids)}, headers=api.headers(),
        timeout=T,
    )
    return r.status_code, r.json()


def test_delete_answers_one_item_per_id_and_removes_the_records(
    api: Api, zohosim: SimProcess
) -> None:
    ids = _ids(api, 3)
    status, body = _delete(api, [ids[0], ids[2]])
    assert status == 200
    assert body["data"] == [
        {"code": "SUCCESS", "details": {"id": ids[0]}, "message": "record deleted",
         "status": "success"},
        {"code": "SUCCESS", "details": {"id": ids[2]}, "message": "record deleted",
         "status": "success"},
    ]
    assert [r["id"] for r in zohosim.admin.records()] == [ids[1]]
    # the unique field is free again: an upsert of the same parent_id creates a new record
    again = api.upsert([rec(0)]).json()["data"][0]
    assert again["action"] == "insert" and again["details"]["id"] not in ids


def test_an_unknown_or_already_deleted_id_is_refused_alone(api: Api) -> None:
    ids = _ids(api, 2)
    assert _delete(api, [ids[0]])[0] == 200
    status, body = _delete(api, [ids[0], ids[1]])  # the first is gone already
    assert status == 207
    assert [item["status"] for item in body["data"]] == ["error", "success"]
    assert body["data"][0]["code"] == "INVALID_DATA"
    assert body["data"][0]["details"] == {"id": ids[0]}
    status, body = _delete(api, ["111", "222"])
    assert status == 400 and {i["code"] for i in body["data"]} == {"INVALID_DATA"}


def test_delete_limits_and_errors(api: Api) -> None:
    status, body = _delete(api, [str(i) for i in range(101)])
    assert status == 400 and body["code"] == "LIMIT_EXCEEDED"
    assert body["details"] == {"limit": 100, "param_name": "ids"}
    status, body = _delete(api, [])
    assert status == 400 and body["code"] == "REQUIRED_PARAM_MISSING"
    status, body = _delete(api, ["1"], module="Nope")
    assert status == 400 and body["code"] == "INVALID_MODULE"
    r = api.http.delete(f"{api.base}/crm/v8/Orders", params={"ids": "1"}, timeout=T)
    assert r.status_code == 401  # no token


def test_delete_credits_one_per_ten_ids_and_none_for_a_refused_request(
    api: Api, zohosim: SimProcess
) -> None:
    ids = _ids(api, 100)
    before = zohosim.admin.credits()["by_api"].get("delete", 0)
    _delete(api, ids[:95])  # 10
    _delete(api, ids[95:96])  # 1
    _delete(api, ["404"])  # refused per id, still charged: 1
    _delete(api, [str(i) for i in range(101)])  # request-level error: not charged
    credits = zohosim.admin.credits()
    assert credits["by_api"]["delete"] - before == 12
    assert credits["calls_by_api"]["delete"] == 4
