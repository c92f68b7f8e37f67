"""The client against a real zohosim process over HTTP, with real Redis and PostgreSQL."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from pipeline.secret import Secret
from pipeline.settings import DEFAULT_MAPPING, Settings, SourceSettings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.credits import CreditLedger, ensure_schema
from pipeline.zoho.errors import (
    AmbiguousJobCreation,
    CreditBudgetExceeded,
    FatalZohoError,
    ServerError,
    SlotWaitTimeout,
    TokenEndpointUnavailable,
    TokenRefreshError,
    TokenRefreshThrottled,
)
from pipeline.zoho.results import BulkJob, JobState, RowError, RowStatus, read_result

from .conftest import REDIS_URL, order_row, sim_settings, write_zip

MakeClient = Callable[..., ZohoClient]


def wait_job(client: ZohoClient, job_id: str, timeout: float = 30.0) -> tuple[BulkJob, set[str]]:
    """Poll until terminal (a test may wait; a Celery task must re-schedule instead)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        seen.update({job.state, job.raw_status})
        if job.terminal:
            return job, seen
        assert time.monotonic() < deadline, f"job {job_id} still {job.raw_status}"
        time.sleep(0.05)


def api_requests(sim: Any, api: str) -> list[dict]:
    return [r for r in sim.admin.requests()["requests"] if r["api"] == api]


def test_org_fields_records(zohosim: Any, make_client: MakeClient) -> None:
    client = make_client()
    assert client.org_zgid() == zohosim.zgid
    assert make_client().org_zgid() == zohosim.zgid  # a second client reads Redis
    assert len(api_requests(zohosim, "org")) == 1
    names = {f["api_name"] for f in client.fields()}
    assert {"parent_id", "Name", "Order_Date"} <= names
    assert client.get_records().records == []


def test_upsert_in_order_insert_then_update(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger
) -> None:
    client = make_client()
    recs = [{"parent_id": str(i), "Name": f"SO-{i}"} for i in range(12)]
    recs[5]["Email"] = "not-an-email"
    out = client.upsert(recs)  # 207: one bad record among 12 (a sub-concurrency call)
    assert [o.index for o in out] == list(range(12))
    assert [o.ok for o in out] == [i != 5 for i in range(12)]
    assert out[5].code == "INVALID_DATA" and out[5].error_fields == ("Email",)
    assert {o.action for o in out if o.ok} == {"insert"}
    again = client.upsert([recs[0], {"parent_id": "1", "Name": "SO-1b"}])  # safe to repeat
    assert [o.action for o in again] == ["update", "update"]
    assert again[0].record_id == out[0].record_id and again[1].duplicate_field == "parent_id"
    exact = client.upsert([{"parent_id": "d", "Name": "SO-d", "Amount": Decimal("1250.50"),
                            "Notes": "naïve, “quoted”"}])  # fmt: skip
    assert exact[0].ok
    stored = client.get_record(exact[0].record_id)
    assert stored["Amount"] == 1250.5 and stored["Notes"] == "naïve, “quoted”"
    bad = client.upsert([{"parent_id": "x", "Email": "nope"}])  # all failed: HTTP 400 with items
    assert not bad[0].ok and bad[0].code in ("INVALID_DATA", "MANDATORY_NOT_FOUND")
    assert client.get_record(out[0].record_id)["Name"] == "SO-0"
    assert client.get_record("999999999999") is None
    page = client.get_records(1, 5, fields=["parent_id", "Name"])
    assert len(page.records) == 5 and page.more
    with pytest.raises(ValueError):
        client.upsert([])
    assert ledger.spent_24h() == zohosim.admin.credits()["used_24h"]  # the same bill


def test_records_past_the_page_limit_are_read_by_page_token(
    zohosim: Any, make_client: MakeClient
) -> None:
    client = make_client()
    zohosim.admin.configure(page_limit=8)  # real v8: 2,000 records by page number, then tokens
    client.upsert([{"parent_id": str(i), "Name": f"SO-{i}"} for i in range(25)])
    with pytest.raises(FatalZohoError):
        client.get_records(4, 3)  # records 10..12: past the limit by page number
    keys = [r["parent_id"] for r in client.iter_records(fields=["parent_id"], per_page=3)]
    assert sorted(keys, key=int) == [str(i) for i in range(25)]


def test_bulk_job_happy_path(
    zohosim: Any, make_client: MakeClient, tmp_path: Path, ledger: CreditLedger
) -> None:
    client = make_client()
    client.upsert([{"parent_id": "2", "Name": "old name"}])
    zip_path = write_zip(tmp_path / "b.zip", [order_row(str(i)) for i in range(1, 6)])
    file_id = client.upload(zip_path)
    assert file_id.isdigit()
    job_id = client.create_upsert_job(file_id, DEFAULT_MAPPING)
    job, _ = wait_job(client, job_id)
    assert job.state is JobState.COMPLETED and (job.added, job.updated, job.total) == (4, 1, 5)
    dest = client.download_result(job.download_url, tmp_path / "out" / "result.zip")
    rows = read_result(dest, DEFAULT_MAPPING.unique_field)
    assert [r.key for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[1].status is RowStatus.UPDATED and all(r.record_id for r in rows)
    stored = {r["parent_id"]: r for r in zohosim.admin.records("Orders")}
    assert stored["3"]["Order_Date"] == "2024-05-01"
    assert ledger.spent_24h() == zohosim.admin.credits()["used_24h"] == 502  # org, upsert, job


def test_relative_url_and_inprogress_spelling(
    zohosim: Any, make_client: MakeClient, tmp_path: Path
) -> None:
    zohosim.admin.configure(
        download_url_style="relative", status_spelling="INPROGRESS", job_rows_per_second=40
    )
    client = make_client()
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row(str(i)) for i in range(30)]))
    job_id = client.create_upsert_job(file_id, DEFAULT_MAPPING)
    job, seen = wait_job(client, job_id)
    assert "INPROGRESS" in seen and JobState.IN_PROGRESS in seen  # the spelling, normalised
    assert JobState.UNKNOWN not in seen
    assert any(r["status"] == 200 for r in api_requests(zohosim, "bulk_get"))
    assert job.download_url.startswith("/")
    rows = read_result(client.download_result(job.download_url, tmp_path / "r.zip"), "parent_id")
    assert len(rows) == 30 and all(r.status is RowStatus.ADDED for r in rows)


def test_result_with_every_row_error_kind(
    zohosim: Any, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client()
    rows = [
        order_row("1"),
        order_row("2", Email="bad-email"),  # INVALID_DATA
        order_row("3", Email="x", Amount="lots", Quantity="many"),  # one code, several columns
        order_row("4", Name=""),  # MANDATORY_NOT_FOUND
        order_row("5", Order_Status="Lost"),  # restricted picklist
        order_row("6", Order_Date="01/05/2024"),  # wrong date layout
    ]
    file_id = client.upload(write_zip(tmp_path / "b.zip", rows))
    job, _ = wait_job(client, client.create_upsert_job(file_id, DEFAULT_MAPPING))
    assert (job.added, job.skipped) == (1, 5)
    dest = client.download_result(job.download_url, tmp_path / "r.zip")
    result = {r.key: r for r in read_result(dest, "parent_id")}
    assert result["1"].ok and not result["1"].errors
    assert result["2"].errors == (RowError("INVALID_DATA", ("Email",)),)
    assert result["3"].errors == (RowError("INVALID_DATA", ("Email", "Amount", "Quantity")),)
    assert result["4"].errors == (RowError("MANDATORY_NOT_FOUND", ("Name",)),)
    assert result["5"].errors == (RowError("INVALID_DATA", ("Order_Status",)),)
    assert result["6"].errors == (RowError("INVALID_DATA", ("Order_Date",)),)
    assert all(r.status is RowStatus.SKIPPED and r.record_id is None
               for k, r in result.items() if k != "1")  # fmt: skip


def test_failed_job(zohosim: Any, make_client: MakeClient, tmp_path: Path) -> None:
    zohosim.admin.fail_next_job()
    client = make_client()
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row("1")]))
    job, _ = wait_job(client, client.create_upsert_job(file_id, DEFAULT_MAPPING))
    assert job.state is JobState.FAILED and job.terminal
    assert zohosim.admin.records("Orders") == []


def test_upload_errors_are_fatal(zohosim: Any, make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"plain text, not a zip")
    with pytest.raises(FatalZohoError) as info:
        client.upload(not_zip)
    assert info.value.code == "INVALID_FILE_FORMAT" and not info.value.transient
    with pytest.raises(FatalZohoError) as info:
        client.create_upsert_job("123456789012345678", DEFAULT_MAPPING)
    assert info.value.http_status == 400


# -- tokens ------------------------------------------------------------------------------------
def test_token_expiry_mid_run(zohosim: Any, make_client: MakeClient) -> None:
    zohosim.admin.configure(token_ttl=2)
    client = make_client()
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < 4.5:
        assert client.upsert([{"parent_id": str(done % 7), "Name": "n"}])[0].ok
        done += 1
        time.sleep(0.05)
    tokens = zohosim.admin.credits()["calls_by_api"]["token"]
    assert 3 <= tokens <= 5  # refreshed ahead of expiry (every ~1.5 s), not per call
    assert done > 20


def test_invalidated_token_is_refreshed_once(zohosim: Any, make_client: MakeClient) -> None:
    client = make_client()
    client.org_zgid()
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 1
    zohosim.admin.invalidate_tokens()
    assert client.fields()
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 2
    assert [r["status"] for r in api_requests(zohosim, "fields")] == [401, 200]


def test_forged_token_replaced_and_bad_secret_refused(
    zohosim: Any, make_client: MakeClient, redis_client
) -> None:
    client = make_client()
    client.org_zgid()
    redis_client.set(client.tokens.token_key, '{"access_token": "1000.forged", '
                     '"refresh_at": 9e18, "expires_at": 9e18}')  # fmt: skip
    assert client.fields()  # the forged token is replaced once
    bad = make_client(
        client_secret=Secret("wrong-secret"), redis_prefix=client.settings.redis_prefix + "x"
    )
    with pytest.raises(TokenRefreshError) as info:
        bad.fields()
    assert info.value.code == "invalid_client"
    before = zohosim.admin.credits()["calls_by_api"]["token"]
    with pytest.raises(TokenRefreshError, match="not asking again"):
        make_client(client_secret=Secret("wrong"), redis_prefix=bad.settings.redis_prefix).fields()
    assert zohosim.admin.credits()["calls_by_api"]["token"] == before  # remembered, not re-sent


def test_our_refresh_limit_refuses_before_sending(zohosim: Any, make_client: MakeClient) -> None:
    client = make_client(token_refresh_limit=2)
    client.org_zgid()
    zohosim.admin.invalidate_tokens()
    client.fields()  # refresh 2 of 2
    zohosim.admin.invalidate_tokens()
    with pytest.raises(TokenRefreshThrottled) as info:
        client.fields()
    assert info.value.code == "TOKEN_REFRESH_LIMIT" and 500 < info.value.retry_after <= 600
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 2  # the third was never sent


def test_zoho_refresh_throttle_blocks_further_attempts(
    zohosim: Any, make_client: MakeClient
) -> None:
    zohosim.admin.configure(refresh_limit=1)
    client = make_client()
    client.org_zgid()
    zohosim.admin.invalidate_tokens()
    with pytest.raises(TokenRefreshThrottled) as info:
        client.fields()
    assert info.value.code == "TOKEN_REFRESH_THROTTLED" and info.value.transient
    with pytest.raises(TokenRefreshThrottled) as info:
        make_client().fields()  # another worker: does not even ask
    assert info.value.code == "TOKEN_REFRESH_BLOCKED"
    assert zohosim.admin.credits()["calls_by_api"]["token"] == 2


# -- faults ------------------------------------------------------------------------------------
def test_burst_of_429_then_success(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger
) -> None:
    client = make_client()
    zohosim.admin.fault("upsert", "429", count=3)
    assert client.upsert([{"parent_id": "1", "Name": "a"}])[0].ok
    assert [r["status"] for r in api_requests(zohosim, "upsert")] == [429, 429, 429, 200]
    assert ledger.spent_24h() == zohosim.admin.credits()["used_24h"]  # 429s released


def test_5xx_retried_then_given_up(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger
) -> None:
    client = make_client(max_retries=2)
    zohosim.admin.fault("fields", "500", count=1)
    zohosim.admin.fault("fields", "503", count=1)
    assert client.fields()
    # A 5xx may have been charged (Zoho does not say): we keep those reservations, zohosim
    # charged nothing for its injected faults, so our ledger errs on the safe side.
    assert ledger.spent_24h() == 3 and zohosim.admin.credits()["used_24h"] == 1
    zohosim.admin.fault("org", "503", count=10)
    with pytest.raises(ServerError) as info:
        client.org_zgid()
    assert info.value.http_status == 503 and info.value.transient
    assert len(api_requests(zohosim, "org")) == 3  # 1 + max_retries


def test_dropped_connections(zohosim: Any, make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    zohosim.admin.fault("upsert", "drop", count=2)
    assert client.upsert([{"parent_id": "1", "Name": "a"}])[0].ok
    assert len(zohosim.admin.records("Orders")) == 1
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row("1")]))
    zohosim.admin.fault("bulk_create", "drop", count=1)
    with pytest.raises(AmbiguousJobCreation) as info:
        client.create_upsert_job(file_id, DEFAULT_MAPPING)
    assert info.value.details == {"file_id": file_id, "cause": "CONNECTION_LOST"}
    assert len(api_requests(zohosim, "bulk_create")) == 1  # not retried


def test_stalls_beyond_read_timeout(zohosim: Any, make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(read_timeout=0.5)
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row("1")]))
    zohosim.admin.fault("upsert", "stall", count=1, seconds=1.5)
    assert client.upsert([{"parent_id": "9", "Name": "a"}])[0].ok
    zohosim.admin.fault("bulk_create", "stall", count=1, seconds=1.0)
    with pytest.raises(AmbiguousJobCreation) as info:
        client.create_upsert_job(file_id, DEFAULT_MAPPING)
    assert info.value.details["cause"] == "READ_TIMEOUT"
    time.sleep(1.0)
    assert zohosim.admin.stats()["jobs"]["total"] == 1  # the stalled call did create a job


def test_budget_refused_before_sending(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger
) -> None:
    ledger.budget, ledger.reserve_credits = 1_300, 1_000
    client = make_client()
    client.org_zgid()
    with pytest.raises(CreditBudgetExceeded) as info:
        client.create_upsert_job("1", DEFAULT_MAPPING)
    assert "refused before sending bulk_create" in str(info.value)
    assert api_requests(zohosim, "bulk_create") == []


def test_no_secret_in_logs_or_errors(
    zohosim: Any, make_client: MakeClient, caplog: pytest.LogCaptureFixture, redis_client
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    client.org_zgid()
    zohosim.admin.invalidate_tokens()
    zohosim.admin.fault("upsert", "500", count=1)
    client.upsert([{"parent_id": "1", "Name": "a"}])
    errors: list[BaseException] = []
    bad = make_client(
        refresh_token=Secret("1000.bad.refresh"), redis_prefix=client.settings.redis_prefix + "b"
    )
    try:
        bad.fields()
    except TokenRefreshError as exc:
        errors.append(exc)
    zohosim.admin.fault("fields", "503", count=10)
    try:
        client.fields()
    except ServerError as exc:
        errors.append(exc)
    access = client.tokens.cached().access_token
    secrets = [zohosim.client_secret, zohosim.refresh_token, access, "1000.bad.refresh"]
    text = caplog.text + "".join(str(e) + repr(e) for e in errors)
    text += (
        repr(client) + repr(client.settings) + repr(client.tokens.cached()) + repr(client.tokens)
    )
    assert len(errors) == 2 and "refreshed the Zoho access token" in caplog.text
    for secret in secrets:
        assert secret not in text


def test_credits_remaining_header_recorded(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger, tmp_path: Path
) -> None:
    zohosim.admin.configure(credit_limit=1_000)
    client = make_client()
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row("1")]))
    job_id = client.create_upsert_job(file_id, DEFAULT_MAPPING)  # org 1 + 500: over half used
    client.upsert([{"parent_id": "2", "Name": "a"}])
    assert ledger.zoho_remaining() == 1_000 - 502
    client.upsert([{"parent_id": "3", "Name": "a"}])
    client.get_job(job_id)  # costs nothing, still carries the header
    assert ledger.zoho_remaining() == 1_000 - 503 == 1_000 - zohosim.admin.credits()["used_24h"]


def test_no_slot_within_the_wait_is_transient_and_free(
    zohosim: Any, make_client: MakeClient, ledger: CreditLedger
) -> None:
    client = make_client(concurrency=1, slot_wait=0.3)
    client.org_zgid()
    holder = client.governor.acquire()  # another worker's call in flight
    with pytest.raises(SlotWaitTimeout) as info:
        client.upsert([{"parent_id": "1", "Name": "a"}])
    assert info.value.transient and api_requests(zohosim, "upsert") == []
    assert ledger.spent_24h() == 1  # the org call only: the refused upsert released its credit
    client.governor.release(holder)
    assert client.upsert([{"parent_id": "1", "Name": "a"}])[0].ok


def test_from_application_settings(zohosim: Any, prefix: str, client_db: str) -> None:
    schema = f"app_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(client_db)
    with conn:
        ensure_schema(conn, schema)
    conn.close()
    settings = Settings(
        source=SourceSettings(dsn=Secret(client_db), ledger_schema=schema),
        zoho=replace(sim_settings(zohosim, prefix), daily_credit_budget=700, credit_reserve=100),
        redis_url=REDIS_URL,
    )
    client = ZohoClient.from_settings(settings)
    assert client.credits.limit == 600 and client.org_zgid() == zohosim.zgid
    assert client.credits.spent_24h() == 1
    client.close()


def test_token_endpoint_trouble_is_not_an_ambiguous_job(
    zohosim: Any, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client(max_retries=2)
    file_id = client.upload(write_zip(tmp_path / "b.zip", [order_row("1")]))
    client.tokens.forget()
    zohosim.admin.fault("token", "500", count=1)
    zohosim.admin.fault("token", "drop", count=1)
    assert client.create_upsert_job(file_id, DEFAULT_MAPPING).isdigit()  # retried: no job sent
    client.tokens.forget()
    zohosim.admin.fault("token", "503", count=5)
    with pytest.raises(TokenEndpointUnavailable):
        client.create_upsert_job(file_id, DEFAULT_MAPPING)
    assert zohosim.admin.stats()["jobs"]["total"] == 1
