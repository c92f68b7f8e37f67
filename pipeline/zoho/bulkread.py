"""Bulk Read (export) calls: create a read job, follow it, download and parse its CSV.

One function per endpoint, on a :class:`~pipeline.zoho.client.ZohoClient`, so every call goes
through the client's ``_call``: credits reserved before sending and settled after, a governor
slot, timeouts, the shared token and bounded retries. A job exports one *page* of up to 200,000
records (50 credits); the next page is another job with ``page + 1``.

Creating a job is not retried once it may have reached Zoho (a second job would cost another
50 credits); a lost answer raises and the caller starts again.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipeline.zoho import limits
from pipeline.zoho.errors import ResultFormatError

if TYPE_CHECKING:
    from pipeline.zoho.client import ZohoClient


class ReadApi(StrEnum):
    """Names of the Bulk Read calls in the credit ledger (and zohosim's ``by_api``)."""

    CREATE = "bulk_read_create"
    STATUS = "bulk_read_get"
    DOWNLOAD = "bulk_read_download"
    CURRENT_USER = "users"


class ReadState(StrEnum):
    ADDED = "ADDED"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ReadJob:
    """A read job's details; ``count``/``more_records``/``download_url`` once COMPLETED."""

    id: str
    state: ReadState
    page: int
    count: int = 0
    more_records: bool = False
    download_url: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (ReadState.COMPLETED, ReadState.FAILED)


def read_url(client: ZohoClient, job_id: str | None = None) -> str:
    base = f"{client.endpoints.api}/crm/bulk/v8/read"
    return base if job_id is None else f"{base}/{quote(str(job_id), safe='')}"


def read_request(module: str, fields: Sequence[str], *, page: int = 1,
                 criteria: dict[str, Any] | None = None,
                 callback_url: str | None = None) -> dict[str, Any]:
    """The create-job body (pure)."""
    if page < 1:
        raise ValueError(f"page is >= 1, not {page}")
    query: dict[str, Any] = {"module": {"api_name": module}, "fields": list(fields), "page": page}
    if criteria is not None:
        query["criteria"] = criteria
    body: dict[str, Any] = {"query": query}
    if callback_url:
        body["callback"] = {"url": callback_url, "method": "post"}
    return body


def parse_read_job(body: dict[str, Any]) -> ReadJob:
    """A job-details answer as a :class:`ReadJob` (``INPROGRESS`` == ``IN PROGRESS``)."""
    try:
        item = body["data"][0]
        raw_state = str(item["state"]).upper().replace("INPROGRESS", "IN PROGRESS")
        state = ReadState(raw_state)
        result = item.get("result") or {}
        page = int(result.get("page") or (item.get("query") or {}).get("page") or 1)
        return ReadJob(str(item["id"]), state, page, int(result.get("count") or 0),
                       bool(result.get("more_records")), result.get("download_url"))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ResultFormatError("RESULT_FORMAT", f"bulk read job details unreadable: {exc}") \
            from None


def create_read_job(client: ZohoClient, fields: Sequence[str], *, page: int = 1,
                    criteria: dict[str, Any] | None = None, callback_url: str | None = None,
                    run_id: int | None = None) -> str:
    """Start an export of one page of the module's records; the job id (50 credits)."""
    payload = read_request(client.settings.module, fields, page=page, criteria=criteria,
                           callback_url=callback_url)
    from pipeline.zoho.client import _json_request

    body: dict[str, Any] = client._call(
        ReadApi.CREATE.value, "POST", read_url(client),
        credits=limits.BULK_READ_JOB_CREDITS, run_id=run_id,
        request=lambda: _json_request(payload), retry_if_sent=False,
    )
    try:
        return str(body["data"][0]["details"]["id"])
    except (KeyError, IndexError, TypeError):
        raise ResultFormatError("RESULT_FORMAT", "create read job answer carries no id") \
            from None


def get_read_job(client: ZohoClient, job_id: str) -> ReadJob:
    """The job's details."""
    body: dict[str, Any] = client._call(
        ReadApi.STATUS.value, "GET", read_url(client, job_id),
        credits=limits.BULK_READ_STATUS_CREDITS,
    )
    return parse_read_job(body)


def download_read_result(client: ZohoClient, job_id: str, dest: Path | str) -> Path:
    """Stream the job's result zip to ``dest`` (written to ``.part`` and renamed)."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")

    def consume(response: Any) -> Path:
        with part.open("wb") as fh:
            for chunk in response.iter_content(256 * 1024):
                fh.write(chunk)
        part.replace(target)
        return target

    try:
        result: Path = client._call(
            ReadApi.DOWNLOAD.value, "GET", read_url(client, job_id) + "/result",
            credits=limits.BULK_READ_DOWNLOAD_CREDITS,
            request=lambda: {"stream": True}, consume=consume,
        )
        return result
    finally:
        part.unlink(missing_ok=True)


def read_csv_rows(zip_path: Path | str) -> Iterator[dict[str, str]]:
    """The records of a result zip, one ``{column: text}`` per row (``Id`` is the record id)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
        if len(names) != 1:
            raise ResultFormatError("RESULT_FORMAT", f"expected one CSV in the zip, got {names}")
        with zf.open(names[0]) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            yield from csv.DictReader(text)


def current_user_id(client: ZohoClient) -> str:
    """The id of the user our token acts as (``GET /crm/v8/users?type=CurrentUser``, 1 credit)."""
    body: dict[str, Any] = client._call(
        ReadApi.CURRENT_USER.value, "GET", f"{client.endpoints.api}/crm/v8/users",
        credits=limits.CURRENT_USER_CREDITS,
        request=lambda: {"params": {"type": "CurrentUser"}},
    )
    try:
        return str(body["users"][0]["id"])
    except (KeyError, IndexError, TypeError):
        raise ResultFormatError("RESULT_FORMAT", "users answer carries no id") from None
