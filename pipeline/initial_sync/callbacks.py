"""Job callbacks: the token in a job's callback URL, its digest in the ledger, the job id a
callback names."""

from __future__ import annotations

import hashlib
import logging
import secrets
from urllib.parse import urlsplit

from psycopg2 import sql

from pipeline import ledger
from pipeline.initial_sync.batch import (
    table,
)
from pipeline.initial_sync.decisions import (
    CALLBACK_PREFIX,
)
from pipeline.legacy.connection import transaction
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def token_of(callback_url: str | None) -> str | None:
    """The callback token at the end of a job's callback URL, if it has our route."""
    if not callback_url:
        return None
    path = urlsplit(callback_url).path
    if CALLBACK_PREFIX not in path:
        return None
    token = path.rsplit(CALLBACK_PREFIX, 1)[1]
    return token or None


def token_digest(token: str) -> str:
    """SHA-256 of a callback token, hex: the ledger stores this, never the token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def fresh_token() -> str:
    return secrets.token_urlsafe(32)


def record_job_hint(settings: Settings, batch_id: int, job_id: str) -> bool:
    """Store a job id a callback named for a batch that sent create-job without learning the
    id (the web process calls this; the poll step verifies it with a GET). True if stored.
    """
    with transaction(settings, "ordersync-web") as cur:
        return ledger.record_job_hint(cur, settings, batch_id, job_id)


def batch_by_token(settings: Settings, token: str) -> int | None:
    """The unfinished batch whose callback token this is (looked up by its digest), or None."""
    with transaction(settings, "ordersync-web") as cur:
        cur.execute(
            sql.SQL("SELECT id FROM {} WHERE callback_digest = %s AND state NOT IN ({})").format(
                table(settings, "batches"),
                ledger.finished_states_sql(),
            ),
            (token_digest(token),),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])
