"""Everything the Zoho client needs to know, as one frozen value.

Built by ``pipeline.settings`` from ``ordersync.toml`` and ``ORDERSYNC_*`` variables; the client
never reads files or the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.secret import Secret


@dataclass(frozen=True)
class ZohoSettings:
    """How to reach one Zoho CRM org and how hard we may use it."""

    data_centre: str = "us"  # us, eu, in, au, jp, cn, ca, sa
    accounts_url: str | None = None  # explicit override, e.g. http://127.0.0.1:8010
    api_url: str | None = None  # explicit override of the API domain
    upload_url: str | None = None  # explicit override of the upload host
    client_id: str = ""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    refresh_token: Secret = field(default_factory=lambda: Secret(""))
    module: str = "Orders"
    unique_field: str = "parent_id"
    concurrency: int = 10  # our cap on simultaneous calls, all processes and hosts together
    sub_concurrency: int = 10  # cap on simultaneous upserts of more than 10 records
    daily_credit_budget: int = 50_000  # rolling 24 h
    credit_reserve: int = 1_000  # never spent by the sync; left for people and other apps
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retries: int = 4  # client-level retries of transient errors, bounded
    callback_url: str | None = None  # public base URL of our `web` process, if any
    ignore_empty: bool = False  # False: an empty cell clears the field in Zoho, as in the source
    org_timezone: str = "UTC"
    # Added with the client (pipeline/zoho/client.py):
    redis_prefix: str = "ordersync:zoho"  # Redis keys: token cache, zgid, governor leases
    token_refresh_limit: int = 10  # refreshes per 10 min we allow ourselves (Zoho's hard cap: 10)
    token_refresh_margin: float = 300.0  # refresh this long before expiry (max 1/4 of lifetime)
    slot_wait: float = 60.0  # longest wait for a governor slot before SlotWaitTimeout
    lease_ttl: float = 30.0  # governor lease lifetime; renewed while the call runs
    retry_backoff: float = 0.5  # first back-off step, seconds (full jitter, doubling)
    retry_backoff_max: float = 30.0  # cap of one back-off sleep
