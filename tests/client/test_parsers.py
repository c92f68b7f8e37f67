"""Pure unit tests: endpoints, error mapping, result and job parsing, the job request body."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import requests

from pipeline.settings import DEFAULT_MAPPING
from pipeline.zoho.endpoints import DATA_CENTRES, Endpoints
from pipeline.zoho.errors import (
    AmbiguousJobCreation,
    AuthenticationError,
    ConnectionFailed,
    CreditBudgetExceeded,
    FatalZohoError,
    RateLimited,
    ResponseLost,
    ServerError,
    TokenRefreshThrottled,
    TransientZohoError,
    ZohoError,
    error_from,
)
from pipeline.zoho.results import (
    JobState,
    ResultFormatError,
    RowError,
    RowStatus,
    normalise_job_state,
    parse_error_cell,
    parse_job,
    parse_upsert,
    read_result,
)


# -- endpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dc", sorted(DATA_CENTRES))
def test_every_data_centre_has_three_https_hosts(dc: str) -> None:
    ep = Endpoints.for_data_centre(dc.upper())
    assert ep.token_url.startswith("https://accounts.") and ep.token_url.endswith("/oauth/v2/token")
    assert ep.upsert_url("Orders").startswith("https://www.zohoapis.")
    assert ep.upsert_url("Orders").endswith("/crm/v8/Orders/upsert")
    assert ep.bulk_write_url.endswith("/crm/bulk/v8/write")
    assert ep.upload_url.endswith("/crm/v8/upload")


def test_known_hosts_and_overrides() -> None:
    eu = Endpoints.for_data_centre("eu")
    assert (eu.accounts, eu.api, eu.upload) == (
        "https://accounts.zoho.eu", "https://www.zohoapis.eu", "https://content.zohoapis.eu"
    )  # fmt: skip
    ca = Endpoints.for_data_centre("ca")
    assert ca.accounts == "https://accounts.zohocloud.ca"
    assert ca.upload == "https://upload.zohocloud.ca"
    sim = Endpoints.for_data_centre(
        "us", accounts="http://127.0.0.1:9/", api="http://127.0.0.1:9", upload="http://h:1"
    )
    assert sim.token_url == "http://127.0.0.1:9/oauth/v2/token"
    assert sim.job_url("123") == "http://127.0.0.1:9/crm/bulk/v8/write/123"
    assert sim.upload_url == "http://h:1/crm/v8/upload"
    with pytest.raises(ValueError, match="unknown Zoho data centre"):
        Endpoints.for_data_centre("mars")


def test_download_urls_resolve_absolute_and_relative() -> None:
    ep = Endpoints.for_data_centre("us", api="http://127.0.0.1:8000")
    absolute = "https://download-accl.zoho.com/v2/crm/1/bulk-write/2/2.zip"
    assert ep.resolve(absolute) == absolute
    assert ep.resolve("/v8/crm/org1/bulk-write/2/2.zip") == (
        "http://127.0.0.1:8000/v8/crm/org1/bulk-write/2/2.zip"
    )


# -- errors --------------------------------------------------------------------------------------
def _response(
    status: int, body: bytes, content_type: str = "application/json"
) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = content_type
    r.reason = "X"
    return r


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (429, b'{"code":"TOO_MANY_REQUESTS","details":{},"message":"m","status":"error"}',
         RateLimited, "TOO_MANY_REQUESTS"),
        (500, b'{"code":"INTERNAL_ERROR","details":{},"message":"m","status":"error"}',
         ServerError, "INTERNAL_ERROR"),
        (503, b"<html>bad gateway</html>", ServerError, "HTTP_503"),
        (401, b'{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token"}',
         AuthenticationError, "INVALID_TOKEN"),
        (400, b'{"code":"INVALID_FILE_ID","details":{},"message":"improper file id"}',
         FatalZohoError, "INVALID_FILE_ID"),
        (200, b'{"code":"INVALID_FILE_FORMAT","details":{},"message":"m","status":"error"}',
         FatalZohoError, "INVALID_FILE_FORMAT"),
        (401, b'{"ERROR_CODE":401,"ERROR_MESSAGE":"Unauthorized","x-error":"check headers"}',
         AuthenticationError, "401"),
        (404, b"", FatalZohoError, "HTTP_404"),
    ],
)  # fmt: skip
def test_error_from_response(status: int, body: bytes, kind: type, code: str) -> None:
    err = error_from(_response(status, body))
    assert type(err) is kind
    assert err.code == code and err.http_status == status
    assert isinstance(err, TransientZohoError) == (status == 429 or status >= 500)


def test_error_from_exceptions_tells_sent_from_not_sent() -> None:
    assert isinstance(error_from(requests.ConnectTimeout("x")), ConnectionFailed)
    assert isinstance(error_from(requests.ReadTimeout("x")), ResponseLost)
    assert isinstance(error_from(requests.ConnectionError(ConnectionRefusedError(111, "no"))),
                      ConnectionFailed)  # fmt: skip
    assert isinstance(error_from(requests.ConnectionError("Connection aborted.")), ResponseLost)
    assert isinstance(error_from(requests.exceptions.ChunkedEncodingError("x")), ResponseLost)
    assert error_from(requests.ReadTimeout("x")).transient


@pytest.mark.parametrize(
    "err",
    [
        ZohoError("A", "m", {"x": 1}, 400),
        RateLimited("TOO_MANY_REQUESTS", "m", {}, 429),
        AmbiguousJobCreation("AMBIGUOUS_JOB_CREATION", "m", {"file_id": "1"}, None),
        CreditBudgetExceeded("CREDIT_BUDGET_EXCEEDED", "m", {"credits": 500}, None, 12.5),
        TokenRefreshThrottled("TOKEN_REFRESH_LIMIT", "m", None, None, 30.0),
    ],
)
def test_errors_pickle_with_their_fields(err: ZohoError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert (back.code, back.message, back.details, back.http_status) == (
        err.code, err.message, err.details, err.http_status
    )  # fmt: skip
    assert getattr(back, "retry_after", None) == getattr(err, "retry_after", None)
    assert str(back) == str(err)


# -- status normalisation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("IN PROGRESS", JobState.IN_PROGRESS), ("INPROGRESS", JobState.IN_PROGRESS),
        ("in_progress", JobState.IN_PROGRESS), ("ADDED", JobState.ADDED),
        ("Completed", JobState.COMPLETED), ("FAILED", JobState.FAILED),
        ("PAUSED", JobState.UNKNOWN), (None, JobState.UNKNOWN),
    ],
)  # fmt: skip
def test_job_state_normalisation(raw: object, state: JobState) -> None:
    assert normalise_job_state(raw) is state
    assert state.terminal == (state in (JobState.COMPLETED, JobState.FAILED))


def test_parse_job_reads_counts_and_url() -> None:
    job = parse_job({
        "status": "COMPLETED", "id": 4150868000005350003, "operation": "upsert",
        "resource": [{"status": "COMPLETED", "code": "COMPLETED", "file": {
            "status": "COMPLETED", "name": "orders.csv", "added_count": 9, "skipped_count": 2,
            "updated_count": 0, "total_count": 11}}],
        "result": {"download_url": "/v8/crm/org1/bulk-write/4150868000005350003/x.zip"},
    })  # fmt: skip
    assert job.id == "4150868000005350003" and job.terminal
    assert (job.added, job.updated, job.skipped, job.total) == (9, 0, 2, 11)
    assert job.download_url.endswith("x.zip")
    queued = parse_job({"status": "ADDED", "id": "5", "resource": [{"file": {"status": "x"}}]})
    assert queued.state is JobState.ADDED and queued.total is None and queued.download_url is None
    with pytest.raises(ResultFormatError):
        parse_job({"status": "ADDED"})


# -- result files --------------------------------------------------------------------------------
def test_error_cell_grammar() -> None:
    assert parse_error_cell("") == ()
    assert parse_error_cell("MANDATORY_NOT_FOUND-Company") == (
        RowError("MANDATORY_NOT_FOUND", ("Company",)),
    )
    assert parse_error_cell("MANDATORY_NOT_FOUND-Company,Last_Name:DUPLICATE_DATA-Email") == (
        RowError("MANDATORY_NOT_FOUND", ("Company", "Last_Name")),
        RowError("DUPLICATE_DATA", ("Email",)),
    )
    assert parse_error_cell("CANNOT_PROCESS") == (RowError("CANNOT_PROCESS", ()),)


def _zip(tmp_path: Path, text: str, name: str = "Orders-orders.csv") -> Path:
    path = tmp_path / "result.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, text)
    return path


def test_result_rows_case_insensitive_headers(tmp_path: Path) -> None:
    text = (
        "Name,parent_id,Customer_Name,status,id,Errors\r\n"
        "SO-1,1,Ann,added,111,\r\n"
        "SO-2,2,Bob,Updated,112,\r\n"
        '"SO-3, x",3,,SKIPPED,,"MANDATORY_NOT_FOUND-Name:INVALID_DATA-Email,Amount"\r\n'
        "SO-4,4,Dan,UNPROCESSED,,\r\n"
    )
    rows = read_result(_zip(tmp_path, text), "parent_id")
    assert [r.key for r in rows] == ["1", "2", "3", "4"]
    assert [r.status for r in rows] == [
        RowStatus.ADDED, RowStatus.UPDATED, RowStatus.SKIPPED, RowStatus.UNPROCESSED
    ]  # fmt: skip
    assert rows[0].record_id == "111" and rows[2].record_id is None
    assert rows[2].errors == (
        RowError("MANDATORY_NOT_FOUND", ("Name",)), RowError("INVALID_DATA", ("Email", "Amount"))
    )  # fmt: skip
    assert rows[0].ok and not rows[2].ok


def test_result_with_record_id_header_and_bom(tmp_path: Path) -> None:
    text = "\ufeffparent_id,Name,STATUS,RECORD_ID,ERRORS\n9,SO-9,ADDED,99,\n"
    rows = read_result(_zip(tmp_path, text), "PARENT_ID")
    assert rows[0].key == "9" and rows[0].record_id == "99"


def test_result_format_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultFormatError, match="STATUS"):
        read_result(_zip(tmp_path, "a,b\n1,2\n"), "a")
    with pytest.raises(ResultFormatError, match="row status"):
        read_result(_zip(tmp_path, "a,STATUS\n1,WEIRD\n"), "a")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ResultFormatError, match="not a zip"):
        read_result(bad, "a")
    assert io  # keep the import honest


# -- upsert items --------------------------------------------------------------------------------
def test_parse_upsert_in_order_with_errors() -> None:
    body = {"data": [
        {"code": "SUCCESS", "action": "insert", "duplicate_field": None, "status": "success",
         "message": "record added", "details": {"id": "10"}},
        {"code": "INVALID_DATA", "status": "error", "message": "invalid data",
         "details": {"api_name": "Email", "json_path": "$.data[1].Email"}},
        {"code": "MULTIPLE_OR_MULTI_ERRORS", "status": "error", "message": "m", "details": {
            "errors": [{"code": "DUPLICATE_DATA", "details": {"api_name": "parent_id"}},
                       {"code": "INVALID_DATA", "details": {"api_name": "Amount"}}]}},
        {"code": "SUCCESS", "action": "update", "duplicate_field": "parent_id",
         "status": "success", "details": {"id": "13"}},
    ]}  # fmt: skip
    out = parse_upsert(body, 4)
    assert [o.index for o in out] == [0, 1, 2, 3]
    assert [o.ok for o in out] == [True, False, False, True]
    assert out[0].action == "insert" and out[0].record_id == "10"
    assert out[1].error_fields == ("Email",)
    assert out[2].error_fields == ("parent_id", "Amount")
    assert out[3].duplicate_field == "parent_id"
    with pytest.raises(ResultFormatError):
        parse_upsert(body, 5)


def test_job_request_body_has_formats_and_find_by() -> None:
    from pipeline.zoho.client import ZohoClient
    from pipeline.zoho.config import ZohoSettings

    client = ZohoClient.__new__(ZohoClient)
    client.settings = ZohoSettings(ignore_empty=True)
    body = client.job_request("777", DEFAULT_MAPPING, callback_url="http://cb/x?batch=1")
    res = body["resource"][0]
    assert body["operation"] == "upsert" and body["ignore_empty"] is True
    assert body["callback"] == {"url": "http://cb/x?batch=1", "method": "post"}
    assert res["module"] == {"api_name": "Orders"} and res["find_by"] == "parent_id"
    assert res["file_id"] == "777"
    maps = {m["api_name"]: m for m in res["field_mappings"]}
    assert [m["index"] for m in res["field_mappings"]] == list(range(len(DEFAULT_MAPPING.fields)))
    assert maps["Order_Date"]["format"] == "yyyy-MM-dd"
    assert maps["Shipped_At"]["format"] == "yyyy-MM-dd'T'HH:mm:ssXXX"
    assert "format" not in maps["Amount"]
    assert "callback" not in client.job_request("1", DEFAULT_MAPPING)


def test_token_lifetime_quirks() -> None:
    from pipeline.zoho.auth import token_lifetime

    assert token_lifetime({"expires_in": 3600}) == 3600
    assert token_lifetime({"expires_in": 3600000, "expires_in_sec": 3600}) == 3600
    assert token_lifetime({"expires_in": 3600000, "expires_in_sec": None}) == 3600
    assert token_lifetime({}) == 3600


def test_json_bodies_keep_decimals_exact() -> None:
    import json
    from decimal import Decimal

    from pipeline.zoho.client import _json_request

    body = _json_request({"data": [{"a": Decimal("0.10"), "b": 1.5, "c": [True, None, "é"]}]})
    text = body["data"].decode()
    assert '"a":0.10' in text and json.loads(text) == {"data": [
        {"a": 0.1, "b": 1.5, "c": [True, None, "é"]}]}  # fmt: skip
    assert body["headers"]["Content-Type"].startswith("application/json")
