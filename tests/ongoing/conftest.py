"""Fixtures of the ongoing-sync tests: a legacy database whose rows are valid and synced, zohosim.

``ongoing`` gives an :class:`Ongoing`: settings pointing at a fresh copy of the legacy template
(all 200 orders made valid, then marked synced, as after an initial sync) and at the shared
zohosim (reset for the test), a ``ZohoClient`` on a Redis prefix of the test's own, and SQL
helpers. Near-real-time runs with ``realtime_max_delay`` 2 s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from pipeline import demo
from pipeline.legacy.connection import connect
from pipeline.settings import Settings, SyncMode
from pipeline.zoho.client import ZohoClient
from tests.fixtures.services import REDIS_URL, delete_keys, query
from tests.fixtures.sim_settings import FAST_RETRIES, sim_zoho
from zohosim.testing import SimProcess

MAX_DELAY = 2.0


@dataclass
class Ongoing:
    settings: Settings
    sim: SimProcess
    client: ZohoClient

    def query(self, text: str, params: Any = None) -> list[tuple[Any, ...]]:
        """One statement in its own committed transaction; its rows if any."""
        return query(self.settings, text, params)

    def seed(self, rows: int, *, seed: int) -> None:
        """Insert ``rows`` new pending demo orders (ids after the existing ones)."""
        conn = connect(self.settings)
        try:
            demo.seed(conn, self.settings, rows, seed=seed)
        finally:
            conn.close()

    def pending(self) -> int:
        return int(self.query("SELECT count(*) FROM orders WHERE NOT synced")[0][0])

    def change(self, ids: range | list[int], status: str = "Shipped") -> None:
        """A mapped change (Zoho sees it) of each order in ``ids``."""
        self.query(
            "UPDATE orders SET status = CASE WHEN status = %s THEN 'Delivered' ELSE %s END"
            " WHERE id = ANY(%s)",
            (status, status, list(ids)),
        )

    def upsert_sizes(self) -> list[int]:
        """Records per upsert call, in order, from our credit ledger (charged calls only)."""
        rows = self.query(
            "SELECT records FROM ordersync.credit_ledger WHERE api = 'upsert' AND credits > 0"
            " ORDER BY id"
        )
        return [int(r[0]) for r in rows]

    def sim_upsert_credits(self) -> int:
        return int(self.sim.admin.credits()["by_api"].get("upsert", 0))

    def sim_records(self) -> dict[str, dict[str, Any]]:
        """zohosim's Orders by parent_id."""
        return {str(r["parent_id"]): r for r in self.sim.admin.records()}


def valid_and_synced(settings: Settings) -> None:
    """Make every template order valid (no Zoho refusal), then synced, as after an initial sync."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE orders SET order_number = 'SO-' || id, customer_name = 'Ann Example',"
                " customer_email = 'ann.' || id || '@example.com', status = 'Paid'"
            )
            cur.execute("UPDATE orders SET synced = true")
    finally:
        conn.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    value = f"test:ongoing:{uuid.uuid4().hex}"
    yield value
    delete_keys(value)


@pytest.fixture
def ongoing(legacy_db: Settings, zohosim: SimProcess, redis_prefix: str) -> Iterator[Ongoing]:
    settings = replace(
        legacy_db,
        zoho=sim_zoho(zohosim, redis_prefix, **FAST_RETRIES),
        redis_url=REDIS_URL,
        realtime_max_delay=MAX_DELAY,
        realtime_check=0.5,
        mode=SyncMode.REALTIME,
    )
    valid_and_synced(settings)
    client = ZohoClient.from_settings(settings)
    try:
        yield Ongoing(settings, zohosim, client)
    finally:
        client.close()
