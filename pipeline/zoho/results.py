"""Pure parsers for Zoho's answers: job details, result files, upsert items.

No I/O beyond reading a file the caller names; every function takes data and returns frozen
values, so they are tested without a server.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipeline.zoho.errors import FatalZohoError, ResultFormatError

log = logging.getLogger(__name__)


def _squash(value: object) -> str:
    """Upper-case, without spaces, underscores or dashes: ``In Progress`` → ``INPROGRESS``."""
    return "".join(ch for ch in str(value or "").upper() if ch not in " _-\t")


class JobState(StrEnum):
    """A bulk write job's state, whatever Zoho's spelling (contract §4.3)."""

    ADDED = "ADDED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"  # a spelling we do not know: treated as still running

    @property
    def terminal(self) -> bool:
        """Only COMPLETED and FAILED end a job; unknown states are waited on."""
        return self in (JobState.COMPLETED, JobState.FAILED)


_JOB_STATES = {
    "ADDED": JobState.ADDED,
    "QUEUED": JobState.ADDED,
    "INPROGRESS": JobState.IN_PROGRESS,
    "RUNNING": JobState.IN_PROGRESS,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
}


def normalise_job_state(raw: object) -> JobState:
    """``IN PROGRESS`` == ``INPROGRESS`` == ``in_progress``; unknown spellings → ``UNKNOWN``."""
    return _JOB_STATES.get(_squash(raw), JobState.UNKNOWN)


class RowStatus(StrEnum):
    """What Zoho did with one row of a bulk write file."""

    ADDED = "ADDED"
    UPDATED = "UPDATED"
    SKIPPED = "SKIPPED"
    UNPROCESSED = "UNPROCESSED"


_ROW_STATUSES = {
    "ADDED": RowStatus.ADDED,
    "INSERTED": RowStatus.ADDED,
    "CREATED": RowStatus.ADDED,
    "UPDATED": RowStatus.UPDATED,
    "SKIPPED": RowStatus.SKIPPED,
    "UNPROCESSED": RowStatus.UNPROCESSED,
    "NOTPROCESSED": RowStatus.UNPROCESSED,
}


def normalise_row_status(raw: object) -> RowStatus:
    """A result file's STATUS cell, case-insensitively; an unknown value is a format error."""
    try:
        return _ROW_STATUSES[_squash(raw)]
    except KeyError:
        raise ResultFormatError("RESULT_FORMAT", f"unknown row status {str(raw)[:40]!r}") from None


@dataclass(frozen=True)
class RowError:
    """One error group of a row: Zoho's ``code`` and the column headers it names."""

    code: str
    fields: tuple[str, ...] = ()


def parse_error_cell(cell: str | None) -> tuple[RowError, ...]:
    """Parse the ERRORS cell grammar ``CODE-col1,col2:CODE2-col3`` into ``RowError`` values.

    ``""`` → ``()``; ``"CODE"`` (no columns) → ``(RowError("CODE"),)``. Codes are upper-case
    words, so the first ``-`` of a group separates the code from its columns.
    """
    text = (cell or "").strip()
    if not text:
        return ()
    out: list[RowError] = []
    for group in text.split(":"):
        group = group.strip()
        if not group:
            continue
        code, _, cols = group.partition("-")
        fields = tuple(c.strip() for c in cols.split(",") if c.strip())
        out.append(RowError(code.strip(), fields))
    return tuple(out)


@dataclass(frozen=True)
class ResultRow:
    """One row of a bulk write result file."""

    line: int  # 1-based data row number in the result CSV (header excluded)
    key: str  # value of the key column (the unique field) as sent
    status: RowStatus
    record_id: str | None
    errors: tuple[RowError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in (RowStatus.ADDED, RowStatus.UPDATED)


_STATUS_HEADERS = ("STATUS",)
_ID_HEADERS = ("RECORD_ID", "ID", "RECORDID")
_ERROR_HEADERS = ("ERRORS", "ERROR")


def _find(headers: Sequence[str], wanted: Sequence[str]) -> int | None:
    folded = [h.strip().upper() for h in headers]
    for name in wanted:
        if name in folded:
            return folded.index(name)
    return None


def iter_result_rows(zip_path: Path | str, key_field: str) -> Iterator[ResultRow]:
    """Rows of a downloaded bulk write result zip, streamed from disk.

    The zip holds one CSV: the first three mapped columns plus STATUS, RECORD_ID (or ID) and
    ERRORS, matched case-insensitively. ``key_field`` is the API name of the unique field (one of
    the first three columns); when absent the first column is taken as the key.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ResultFormatError("RESULT_FORMAT", f"result is not a zip: {exc}") from None
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if not names:
            raise ResultFormatError("RESULT_FORMAT", "result zip is empty")
        csv_names = [n for n in names if n.lower().endswith(".csv")] or names
        if len(csv_names) > 1:
            log.warning("result zip holds %s files, reading %s", len(csv_names), csv_names[0])
        with archive.open(csv_names[0]) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            yield from _rows(csv.reader(text), key_field)


def _rows(reader: Iterator[list[str]], key_field: str) -> Iterator[ResultRow]:
    try:
        headers = next(reader)
    except StopIteration:
        raise ResultFormatError("RESULT_FORMAT", "result CSV has no header") from None
    i_status = _find(headers, _STATUS_HEADERS)
    i_id = _find(headers, _ID_HEADERS)
    i_err = _find(headers, _ERROR_HEADERS)
    if i_status is None:
        raise ResultFormatError("RESULT_FORMAT", f"no STATUS column in {headers[:8]}")
    i_key = _find(headers, (key_field.upper(),))
    if i_key is None:
        i_key = 0
    for line, cells in enumerate(reader, start=1):
        if not cells or all(not c for c in cells):
            continue

        def cell(i: int | None, cells: list[str] = cells) -> str:
            return cells[i].strip() if i is not None and i < len(cells) else ""

        yield ResultRow(
            line=line,
            key=cell(i_key),
            status=normalise_row_status(cell(i_status)),
            record_id=cell(i_id) or None,
            errors=parse_error_cell(cell(i_err)),
        )


def read_result(zip_path: Path | str, key_field: str) -> list[ResultRow]:
    """All rows of a result zip (``iter_result_rows`` as a list)."""
    return list(iter_result_rows(zip_path, key_field))


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class BulkJob:
    """A bulk write job as ``GET /crm/bulk/v8/write/{id}`` describes it."""

    id: str
    state: JobState
    raw_status: str
    operation: str | None = None
    added: int | None = None
    updated: int | None = None
    skipped: int | None = None
    total: int | None = None
    download_url: str | None = None
    file_name: str | None = None
    resource_code: str | None = None
    # The URL the job will POST to when it ends, if any: it holds the batch's callback token,
    # so it is kept out of the repr (a logged or failed job must not show it).
    callback_url: str | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


def parse_job(body: Mapping[str, Any]) -> BulkJob:
    """A ``BulkJob`` from a job-details body (also accepts a callback body of the same shape).

    Tolerates ``{"data": [job]}`` wrapping, missing counts (queued jobs) and every status spelling.
    """
    if "data" in body and isinstance(body["data"], list) and body["data"]:
        body = body["data"][0]
    job_id = body.get("id")
    if job_id in (None, ""):
        raise ResultFormatError("RESULT_FORMAT", "job details carry no id")
    raw_status = str(body.get("status") or "")
    resources = body.get("resource") or []
    res = resources[0] if isinstance(resources, list) and resources else {}
    file = res.get("file") if isinstance(res, dict) else None
    file = file if isinstance(file, dict) else {}
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    state = normalise_job_state(raw_status)
    if state is JobState.UNKNOWN and not raw_status and isinstance(res, dict):
        state = normalise_job_state(res.get("status"))
    return BulkJob(
        id=str(job_id),
        state=state,
        raw_status=raw_status,
        operation=body.get("operation"),
        added=_int(file.get("added_count")),
        updated=_int(file.get("updated_count")),
        skipped=_int(file.get("skipped_count")),
        total=_int(file.get("total_count")),
        download_url=(result or {}).get("download_url") or None,
        file_name=file.get("name"),
        resource_code=res.get("code") if isinstance(res, dict) else None,
        callback_url=(
            str(body["callback"].get("url") or "") or None
            if isinstance(body.get("callback"), dict)
            else None
        ),
    )


class UpsertAction(StrEnum):
    INSERT = "insert"
    UPDATE = "update"


@dataclass(frozen=True)
class UpsertOutcome:
    """What Zoho did with the record at ``index`` of one upsert call."""

    index: int
    ok: bool
    code: str
    message: str = ""
    action: UpsertAction | None = None
    record_id: str | None = None
    duplicate_field: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def error_fields(self) -> tuple[str, ...]:
        """API names the error concerns (``details.api_name``, or those of nested errors)."""
        names: list[str] = []
        if self.details.get("api_name"):
            names.append(str(self.details["api_name"]))
        for sub in self.details.get("errors") or []:
            if isinstance(sub, dict) and isinstance(sub.get("details"), dict):
                name = sub["details"].get("api_name")
                if name and name not in names:
                    names.append(str(name))
        return tuple(names)


def _items(items: object, sent: int, call: str, unit: str) -> list[dict[str, Any]]:
    """``data[]`` of a per-record answer: one object per sent record, or ``ResultFormatError``."""
    if not isinstance(items, list) or len(items) != sent:
        got = len(items) if isinstance(items, list) else "no"
        raise ResultFormatError("RESULT_FORMAT", f"{call} answered {got} items for {sent} {unit}")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ResultFormatError("RESULT_FORMAT", f"{call} item {index} is not an object")
    return items


def parse_upsert(body: Mapping[str, Any], sent: int) -> list[UpsertOutcome]:
    """One ``UpsertOutcome`` per sent record, in request order, from a 200/201/207/400 body."""
    items = body.get("data")
    if isinstance(items, list) and len(items) == 1 and sent != 1:
        item = items[0] if isinstance(items[0], dict) else {}
        if str(item.get("status", "")).lower() == "error":  # request-level error in data[] (§6.5)
            raise FatalZohoError(
                str(item.get("code") or "UPSERT_REFUSED"),
                str(item.get("message") or ""),
                item.get("details") if isinstance(item.get("details"), dict) else {},
            )
    out = []
    for index, item in enumerate(_items(items, sent, "upsert", "records")):
        raw_details = item.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        ok = str(item.get("status", "")).lower() == "success"
        action = item.get("action")
        out.append(
            UpsertOutcome(
                index=index,
                ok=ok,
                code=str(item.get("code") or ""),
                message=str(item.get("message") or ""),
                action=UpsertAction(action) if ok and action in ("insert", "update") else None,
                record_id=str(details["id"]) if ok and details.get("id") else None,
                duplicate_field=item.get("duplicate_field"),
                details=details,
            )
        )
    return out


@dataclass(frozen=True)
class DeleteOutcome:
    """What Zoho did with one id of a Delete Records call.

    ``gone``: the record is not in Zoho any more, deleted now (``ok``) or before (Zoho answers
    ``INVALID_DATA`` for an id it does not hold), so there is nothing left to delete.
    """

    record_id: str
    ok: bool
    code: str
    message: str = ""

    @property
    def gone(self) -> bool:
        return self.ok or self.code == "INVALID_DATA"


def parse_delete(body: Mapping[str, Any], ids: Sequence[str]) -> list[DeleteOutcome]:
    """One ``DeleteOutcome`` per sent id, in request order, from a 200/207/400 body."""
    out = []
    for index, item in enumerate(_items(body.get("data"), len(ids), "delete", "ids")):
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        record_id = str((details or {}).get("id") or ids[index])
        if record_id != ids[index]:
            raise ResultFormatError(
                "RESULT_FORMAT", f"delete item {index} is about {record_id}, not {ids[index]}"
            )
        out.append(
            DeleteOutcome(
                record_id=record_id,
                ok=str(item.get("status", "")).lower() == "success",
                code=str(item.get("code") or ""),
                message=str(item.get("message") or ""),
            )
        )
    return out
