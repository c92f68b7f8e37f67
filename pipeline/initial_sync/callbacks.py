"""Job callbacks: the token in a job's callback URL, its digest in the ledger, the job id a
callback names. The web process (``cli.web``) uses these; there is no second copy."""

from __future__ import annotations

import hashlib
import logging
import secrets
from urllib.parse import urlsplit

from pipeline import ledger
from pipeline.initial_sync.decisions import (
    CALLBACK_PREFIX,
)
from pipeline.legacy.connection import transaction
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters


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
    """A new, unguessable token for one create-job attempt's callback URL (256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def callback_path(token: str) -> str:
    """The path of a callback URL (the web process's route; prefix it with the public base)."""
    return f"{CALLBACK_PREFIX}{token}"


def record_job_hint(settings: Settings, batch_id: int, job_id: str) -> bool:
    """Store a job id a callback named for a batch that sent create-job without learning the
    id (the web process calls this; the poll step verifies it with a GET). True if stored.
    """
    with transaction(settings, "ordersync-web") as cur:
        return ledger.record_job_hint(cur, settings, batch_id, job_id)


def batch_by_token(settings: Settings, token: str) -> int | None:
    """The unfinished batch whose callback token this is (looked up by its digest), or None."""
    with transaction(settings, "ordersync-web") as cur:
        return ledger.batch_by_callback_digest(
            cur, settings.source.ledger_schema, token_digest(token)
        )
