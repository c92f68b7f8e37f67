"""The data shapes every other module codes against: ``Settings`` and its sections.

Read by ``pipeline.settings.load``; checked by ``pipeline.settings.checks``; shown by
``pipeline.settings.display``. Import them from ``pipeline.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.secret import Secret
from pipeline.zoho.config import ZohoSettings

MAX_BATCH_SIZE = 25_000


class SyncMode(StrEnum):
    REALTIME = "realtime"
    INTERVAL = "interval"
    BOTH = "both"


@dataclass(frozen=True)
class SourceSettings:
    """The legacy table and where our sync state lives."""

    dsn: Secret = field(
        default_factory=lambda: Secret("postgresql://postgres@127.0.0.1:5432/orders")
    )
    schema: str = "public"
    table: str = "orders"
    key_column: str = "id"
    synced_column: str = "synced"
    version_column: str = "sync_version"
    zoho_id_column: str = "zoho_id"
    ledger_schema: str = "ordersync"


@dataclass(frozen=True)
class Settings:
    """Everything ordersync reads from configuration."""

    source: SourceSettings = field(default_factory=SourceSettings)
    zoho: ZohoSettings = field(default_factory=ZohoSettings)
    mapping: Mapping = field(default_factory=lambda: DEFAULT_MAPPING)
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"  # token cache, governor, locks
    batch_size: int = MAX_BATCH_SIZE
    batches_in_flight: int = 3
    realtime_threshold: int = 100
    realtime_max_delay: float = 600.0  # seconds
    realtime_check: float = 30.0  # seconds between near-real-time checks
    # Ready rows in whole tens go at once (Upsert costs 1 credit per 10: waiting saves none);
    # 100 = only full batches before the deadline (the older scheme).
    realtime_min_batch: int = 10
    interval_crontab: str = "0 */12 * * *"
    mode: SyncMode = SyncMode.BOTH
    max_attempts: int = 3  # before a row is quarantined
    job_callback_wait: float = 300.0  # seconds to await a callback before re-creating a job
    # seconds a batch may sit past its due time with no live worker holding its lock before the
    # sweeper re-enqueues its step (a step at work holds the lock, however long it takes)
    stall_after: float = 20.0
    work_dir: Path = Path("var/ordersync")  # zips and result files
    org_timezone: str = "UTC"
    # When set, the web process's /metrics wants ``Authorization: Bearer <token>``.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    # ``ordersync verify`` through beat: a crontab ("0 3 * * 0" = Sundays 03:00), "" = off.
    verify_crontab: str = ""
    verify_repair: bool = False  # scheduled verifications re-queue what the legacy value wins
    verify_zoho_wins: str = ""  # comma-separated Zoho fields whose edits in Zoho are kept
    # Deletes, opt-in: a deleted legacy row (a trigger writes a tombstone) deletes its Zoho
    # record through Delete Records, at most ``max_deletes`` a run (more: refused, alerted).
    deletes: bool = False
    max_deletes: int = 100
    deletes_every: float = 300.0  # seconds between delete runs through beat
    # Faster change detection, opt-in: the change trigger also NOTIFYs (``db install``) and
    # ``ordersync listen`` sends a near-real-time check when notified; the periodic check stays.
    notify: bool = False


# The demo `orders` table's mapping (see pipeline/demo.py); a real install states its own.
DEFAULT_MAPPING: Mapping = Mapping(
    key_column="id",
    unique_field="parent_id",
    fields=(
        FieldSpec("id", "parent_id", FieldType.TEXT, max_length=255, mandatory=True),
        FieldSpec("order_number", "Name", FieldType.TEXT, max_length=120, mandatory=True),
        FieldSpec("customer_name", "Customer_Name", FieldType.TEXT, max_length=100),
        FieldSpec("customer_email", "Email", FieldType.EMAIL),
        FieldSpec(
            "status",
            "Order_Status",
            FieldType.PICKLIST,
            allowed=("New", "Paid", "Shipped", "Delivered", "Cancelled", "Refunded"),
        ),
        FieldSpec("amount", "Amount", FieldType.CURRENCY),
        FieldSpec(
            "currency",
            "Currency_Code",
            FieldType.PICKLIST,
            allowed=("USD", "EUR", "GBP", "INR", "JPY"),
        ),
        FieldSpec("quantity", "Quantity", FieldType.INTEGER),
        FieldSpec("order_date", "Order_Date", FieldType.DATE),
        FieldSpec("shipped_at", "Shipped_At", FieldType.DATETIME),
        FieldSpec("is_gift", "Is_Gift", FieldType.BOOLEAN),
        FieldSpec("notes", "Notes", FieldType.MULTILINE, max_length=32_000),
    ),
)
