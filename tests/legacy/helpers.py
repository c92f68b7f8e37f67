"""Small SQL helpers for the legacy tests."""

from __future__ import annotations

from pipeline.settings import Settings
from tests.fixtures.services import query

__all__ = ["query", "sync_state"]


def sync_state(settings: Settings, row_id: int) -> tuple[bool, int, str | None]:
    """(synced, sync_version, zoho_id) of one demo order."""
    rows = query(
        settings, "SELECT synced, sync_version, zoho_id FROM orders WHERE id = %s", (row_id,)
    )
    return rows[0]  # type: ignore[return-value]
