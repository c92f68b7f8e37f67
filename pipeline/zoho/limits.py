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

# Delete Records: up to 100 ids a call, charged like insert/update/upsert (1 per 10 ids): the
# v8 limits table is known only through transcriptions (contract §7.2); zohosim charges the same.
DELETE_MAX_RECORDS = 100


def delete_credits(records: int) -> int:
    """Credits of one Delete Records call of ``records`` ids: 1 per 10, rounded up."""
    if not 1 <= records <= DELETE_MAX_RECORDS:
        raise ValueError(f"a delete carries 1..{DELETE_MAX_RECORDS} ids, not {records}")
    return math.ceil(records / UPSERT_RECORDS_PER_CREDIT)


# Bulk Read (export): one job initialise per page of up to 200,000 records (contract §7.2).
BULK_READ_JOB_CREDITS = 50
BULK_READ_PAGE_RECORDS = 200_000
BULK_READ_STATUS_CREDITS = 0  # UNCONFIRMED, as for bulk write; zohosim charges the same
BULK_READ_DOWNLOAD_CREDITS = 0
CURRENT_USER_CREDITS = DEFAULT_CALL_CREDITS


def bulk_read_credits(records: int) -> int:
    """Credits to export ``records`` records with Bulk Read: 50 per started 200k page (≥ 1)."""
    if records < 0:
        raise ValueError(f"a record count is >= 0, not {records}")
    return BULK_READ_JOB_CREDITS * max(1, math.ceil(records / BULK_READ_PAGE_RECORDS))
