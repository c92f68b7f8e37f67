"""Small SQL helpers for the legacy tests."""

from __future__ import annotations

from typing import Any

from pipeline.legacy.connection import connect
from pipeline.settings import Settings


def query(settings: Settings, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own committed transaction; rows if it returns any."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def sync_state(settings: Settings, row_id: int) -> tuple[bool, int, str | None]:
    """(synced, sync_version, zoho_id) of one demo order."""
    rows = query(
        settings, "SELECT synced, sync_version, zoho_id FROM orders WHERE id = %s", (row_id,)
    )
    return rows[0]  # type: ignore[return-value]
