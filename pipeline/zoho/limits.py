"""Zoho CRM's limits and credit costs, as named constants (contract §3.4, §6, §7)."""

from __future__ import annotations

import math

BULK_JOB_CREDITS = 500  # charged when a bulk write job is created
BULK_JOB_MAX_ROWS = 25_000  # rows per CSV / job
BULK_FILE_MAX_BYTES = 25 * 1024 * 1024  # zip size
BULK_MAX_COLUMNS = 200
UPSERT_MAX_RECORDS = 100  # records per upsert call
UPSERT_RECORDS_PER_CREDIT = 10
SUB_CONCURRENCY_MIN_RECORDS = 11  # upserts of more than 10 records count against sub-concurrency
DEFAULT_CALL_CREDITS = 1  # GET org, fields, records
TEXT_MAX_LENGTH = 255  # Single Line field
MULTILINE_MAX_LENGTH = 32_000  # Multi Line field (large)
# Not in any table Zoho publishes (contract §7.2, UNCONFIRMED); zohosim charges the same.
UPLOAD_CREDITS = 0
BULK_JOB_READ_CREDITS = 0
BULK_RESULT_DOWNLOAD_CREDITS = 0


def upsert_credits(records: int) -> int:
    """Credits of one upsert call of ``records`` records: 1 per 10, rounded up."""
    if not 1 <= records <= UPSERT_MAX_RECORDS:
        raise ValueError(f"an upsert carries 1..{UPSERT_MAX_RECORDS} records, not {records}")
    return math.ceil(records / UPSERT_RECORDS_PER_CREDIT)
