"""Zoho's per-row codes and what each means for the row: the one table, used by every mode.

A row Zoho refuses (a SKIPPED line of a bulk result, an error item of an upsert answer) carries a
code. What we do next depends only on its class:

* ``TRANSIENT``: a reason of the moment (limits, locks, a busy server). The same version may
  succeed later: it is sent again, with back-off, up to ``max_attempts × TRANSIENT_FACTOR``
  times before it is held back.
* ``PERMANENT``: the row's data is the reason (a mandatory field empty, an invalid value, a
  duplicate of a unique field). The same version can only be refused again, so it is held back
  at once, and costs nothing more until its mapped data changes (its version moves) or the user
  releases it (``ordersync retry --force``).
* ``UNKNOWN``: a code this table does not know. It counts towards ``max_attempts`` like before
  (a few tries, then held back), and a warning names it so the table can learn it.

``VALIDATION_CODE`` is ours, not Zoho's: the row broke a field rule we check before sending
(``pipeline.validate``), so it never reached Zoho and cost nothing. It is permanent.
"""

from __future__ import annotations

from enum import StrEnum


class RowCodeClass(StrEnum):
    """What a row code says about sending the same row version again."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


# Our code for a row that failed our own validation before any call (never sent).
VALIDATION_CODE = "ORDERSYNC_VALIDATION"
# Our codes for a bulk result line without an error code.
UNPROCESSED_CODE = "UNPROCESSED"
SKIPPED_CODE = "SKIPPED"

# Zoho skips these rows for reasons of the moment (contract §5.4, §6.4, §8).
TRANSIENT_ROW_CODES = frozenset(
    {
        "LIMIT_EXCEEDED",
        "CANNOT_PROCESS",
        "RECORD_LOCKED",
        "LOCKED",
        UNPROCESSED_CODE,
        "INTERNAL_ERROR",
        "INTERNAL_SERVER_ERROR",
        "TOO_MANY_REQUESTS",
    }
)
# The row's own data is refused: the same version is refused again (contract §5.4, §6.4).
PERMANENT_ROW_CODES = frozenset(
    {
        "INVALID_DATA",
        "MANDATORY_NOT_FOUND",
        "DUPLICATE_DATA",
        "MULTIPLE_OR_MULTI_ERRORS",
        "DEPENDENT_FIELD_MISSING",
        "DEPENDENT_MISMATCH",
        "NOT_APPROVED",
        "BLOCKED_RECORD",
        "ID_ALREADY_CONVERTED",
        VALIDATION_CODE,
    }
)
# Transient codes may be tried this many times as often as ``max_attempts``.
TRANSIENT_FACTOR = 3


def classify(code: str | None) -> RowCodeClass:
    """The class of a row code (case-insensitive; none or empty is unknown)."""
    folded = (code or "").strip().upper()
    if folded in TRANSIENT_ROW_CODES:
        return RowCodeClass.TRANSIENT
    if folded in PERMANENT_ROW_CODES:
        return RowCodeClass.PERMANENT
    return RowCodeClass.UNKNOWN


def is_transient(code: str | None) -> bool:
    """Does the code mean "try again later" rather than "this row is refused"?"""
    return classify(code) is RowCodeClass.TRANSIENT


def attempts_allowed(code: str | None, max_attempts: int) -> int:
    """Refusals of one row version with ``code`` before the row is held back.

    Permanent: 1 (held at once). Transient: ``max_attempts × TRANSIENT_FACTOR``. Unknown:
    ``max_attempts``.
    """
    kind = classify(code)
    if kind is RowCodeClass.PERMANENT:
        return 1
    if kind is RowCodeClass.TRANSIENT:
        return max_attempts * TRANSIENT_FACTOR
    return max_attempts
