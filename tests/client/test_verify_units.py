"""Pure tests of the verify verdict and the Bulk Read request/answer shapes (no I/O)."""

from __future__ import annotations

import pytest

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.verify import Winner, compare, estimate_credits, pages_for, same_value
from pipeline.zoho.bulkread import ReadState, parse_read_job, read_request
from pipeline.zoho.errors import ResultFormatError
from pipeline.zoho.limits import bulk_read_credits

MAPPING = Mapping(fields=(
    FieldSpec("id", "parent_id", FieldType.TEXT),
    FieldSpec("amount", "Amount", FieldType.CURRENCY),
    FieldSpec("shipped_at", "Shipped_At", FieldType.DATETIME),
    FieldSpec("notes", "Notes", FieldType.MULTILINE),
))
US, THEM = "100", "200"


def rec(rid: str, key: str, amount: str = "10.5", shipped: str = "2024-05-01T10:00:00+00:00",
        notes: str = "", by: str = US) -> dict[str, str]:
    return {"Id": rid, "parent_id": key, "Amount": amount, "Shipped_At": shipped, "Notes": notes,
            "Modified_By": by, "Modified_Time": "2024-06-01T00:00:00+00:00"}


def legacy(key: str, synced: bool = True, amount: str = "10.50",
           shipped: str = "2024-05-01T12:00:00+02:00",
           notes: str | None = None) -> tuple[str, tuple[bool, list[str | None]]]:
    return key, (synced, [key, amount, shipped, notes])


def test_same_value_follows_the_serialiser() -> None:
    money = MAPPING.fields[1]
    when = MAPPING.fields[2]
    text = MAPPING.fields[3]
    assert same_value(money, "10.50", "10.5")
    assert not same_value(money, "10.50", "10.51")
    assert same_value(when, "2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00+00:00")
    assert not same_value(when, "2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00+00:00")
    assert same_value(text, None, "") and same_value(text, "", None)
    assert not same_value(text, None, "x") and not same_value(text, "A", "a")


def test_compare_names_each_kind_once() -> None:
    rows = dict([legacy("1"), legacy("2"), legacy("3"), legacy("4"), legacy("5", synced=False),
                 legacy("6", notes="ours")])
    zoho = [rec("a", "1"), rec("b", "2"), rec("b2", "2"), rec("c", "4", amount="11", by=THEM),
            rec("d", "6", notes="theirs", by=THEM), rec("s", "99"), rec("t", "")]
    r = compare(MAPPING, rows, zoho, our_user=US, zoho_wins=["Notes"])
    assert r.missing == ("3",)
    assert r.duplicates == {"2": ("b", "b2")}
    assert r.strays == (("", "t"), ("99", "s"))
    assert r.pending_rows == 1 and r.legacy_rows == 6 and r.zoho_records == 7
    assert [(d.parent_id, d.field, d.drift, d.winner) for d in r.differences] == [
        ("4", "Amount", True, Winner.LEGACY), ("6", "Notes", True, Winner.ZOHO)]
    assert r.requeue_keys == ("3", "4")
    assert not r.clean


def test_a_difference_we_wrote_ourselves_is_not_drift() -> None:
    r = compare(MAPPING, dict([legacy("1", notes="new")]), [rec("a", "1", notes="old")],
                our_user=US, zoho_wins=["Notes"])
    (d,) = r.differences
    assert not d.drift and d.winner is Winner.LEGACY  # zoho_wins only keeps edits made in Zoho


def test_cost_is_one_job_per_200k_records() -> None:
    assert bulk_read_credits(0) == bulk_read_credits(200_000) == 50
    assert bulk_read_credits(200_001) == 100
    assert bulk_read_credits(1_000_000) == 250
    assert estimate_credits(1_000_000) == 251 and pages_for(1_000_000) == 5
    with pytest.raises(ValueError):
        bulk_read_credits(-1)


def test_read_request_and_job_details() -> None:
    body = read_request("Orders", ["parent_id"], page=2, callback_url="https://x.example/cb")
    assert body == {"query": {"module": {"api_name": "Orders"}, "fields": ["parent_id"],
                              "page": 2},
                    "callback": {"url": "https://x.example/cb", "method": "post"}}
    with pytest.raises(ValueError):
        read_request("Orders", ["parent_id"], page=0)
    job = parse_read_job({"data": [{"id": 7, "state": "COMPLETED", "result": {
        "page": 2, "count": 5, "more_records": True, "download_url": "/r"}}]})
    assert (job.id, job.state, job.page, job.count, job.more_records, job.finished) == (
        "7", ReadState.COMPLETED, 2, 5, True, True)
    running = parse_read_job({"data": [{"id": "8", "state": "INPROGRESS", "query": {"page": 1}}]})
    assert running.state is ReadState.IN_PROGRESS and not running.finished
    with pytest.raises(ResultFormatError):
        parse_read_job({"data": []})
