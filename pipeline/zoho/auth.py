"""OAuth access tokens shared by every process and host through Redis (contract §1).

* The current token lives in Redis (``<prefix>:token``, JSON, expiring with the token), so every
  worker reuses one token for its whole life instead of refreshing per process.
* A refresh is done by one process at a time, under ``<prefix>:token:lock`` (``SET NX PX``,
  released by compare-and-delete); the others wait briefly and read the new token (or keep using
  the old one while it is still valid).
* Refreshed ``margin`` seconds before expiry (5 min, or a quarter of a short lifetime), and once
  after a 401 ``INVALID_TOKEN`` / ``AUTHENTICATION_FAILURE`` (the caller passes the refused token
  as ``stale`` so a token someone else already replaced is not refreshed again).
* Zoho allows 10 refreshes per refresh token per 10 minutes and then blocks refreshes for the rest
  of the window. Every refresh attempt is counted in ``<prefix>:token:refreshes`` (a sorted set of
  timestamps); one beyond ``refresh_limit`` is refused with ``TokenRefreshThrottled`` before it is
  sent. Zoho's own throttle answer (``{"error": "Access Denied"}``) blocks refreshes for the window
  in ``<prefix>:token:blocked``; a refusal (``invalid_client``, ``invalid_code``) is remembered
  for a minute in ``<prefix>:token:failed`` so other workers do not repeat it.
* Zoho's quirks: errors come as HTTP 200 ``{"error": …}``; success is the presence of
  ``access_token``; with the legacy ``expires_in_sec`` key, ``expires_in`` is in milliseconds.

The access token, client secret and refresh token never appear in logs, exceptions or reprs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import cast

import redis
import requests

from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.endpoints import Endpoints
from pipeline.zoho.errors import (
    TokenEndpointUnavailable,
    TokenRefreshError,
    TokenRefreshThrottled,
    TransientZohoError,
    error_from,
    mask,
)

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = 3600.0
FAILED_MEMORY = 60.0  # seconds a refused refresh (invalid_client, invalid_code) is remembered
THROTTLE_ERRORS = frozenset({"access denied", "access_denied", "too_many_requests"})

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class CachedToken:
    """A token as stored in Redis; ``repr`` hides the token."""

    access_token: str
    refresh_at: float  # epoch seconds: refresh from here on
    expires_at: float  # epoch seconds: Zoho refuses it from here on
    api_domain: str | None = None

    def __repr__(self) -> str:
        return f"CachedToken(refresh_at={self.refresh_at:.0f}, expires_at={self.expires_at:.0f})"


def token_lifetime(body: dict[str, object]) -> float:
    """Seconds a token answer is valid: ``expires_in`` is ms when ``expires_in_sec`` is present."""
    if "expires_in_sec" in body:
        try:
            return float(body["expires_in_sec"])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            try:
                return float(body.get("expires_in")) / 1000.0  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return DEFAULT_LIFETIME
    try:
        return float(body.get("expires_in", DEFAULT_LIFETIME))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME


class TokenManager:
    """Hands out a valid access token, refreshing it for everyone sharing ``redis`` + ``prefix``."""

    def __init__(
        self,
        settings: ZohoSettings,
        endpoints: Endpoints,
        redis_client: redis.Redis,
        session: requests.Session,
        *,
        prefix: str,
        margin: float = 300.0,
        refresh_limit: int = 10,
        refresh_window: float = 600.0,
        lock_ttl: float = 30.0,
        wait: float = 30.0,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.redis = redis_client
        self.session = session
        self.margin = margin
        self.refresh_limit = refresh_limit
        self.refresh_window = refresh_window
        self.lock_ttl = lock_ttl
        self.wait = wait
        self.token_key = f"{prefix}:token"
        self.lock_key = f"{prefix}:token:lock"
        self.count_key = f"{prefix}:token:refreshes"
        self.blocked_key = f"{prefix}:token:blocked"
        self.failed_key = f"{prefix}:token:failed"
        self._release = redis_client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"TokenManager({self.token_key!r})"

    # -- reading ---------------------------------------------------------------------------------
    def cached(self) -> CachedToken | None:
        """The token in Redis, if any (it may be due for refresh)."""
        raw = cast(bytes | None, self.redis.get(self.token_key))
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return CachedToken(
                data["access_token"],
                float(data["refresh_at"]),
                float(data["expires_at"]),
                data.get("api_domain"),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable token cache entry %s, ignoring it", self.token_key)
            return None

    def token(self) -> str:
        """A valid access token: the shared one, refreshed first when it is due."""
        cached = self.cached()
        if cached is not None and time.time() < cached.refresh_at:
            return cached.access_token
        return self.refresh(stale=cached.access_token if cached else None)

    def forget(self) -> None:
        """Drop the shared token (the next call refreshes)."""
        self.redis.delete(self.token_key)

    # -- refreshing ------------------------------------------------------------------------------
    def refresh(self, stale: str | None = None) -> str:
        """A token other than ``stale``, refreshing it if nobody else has.

        Only the holder of the Redis lock calls Zoho; the others wait up to ``wait`` seconds for
        the new token, using the current one meanwhile if it is still valid and not ``stale``.
        """
        deadline = time.monotonic() + self.wait
        pause = 0.01
        while True:
            cached = self.cached()
            now = time.time()
            if cached is not None and cached.access_token != stale and now < cached.refresh_at:
                return cached.access_token
            owner = uuid.uuid4().hex
            if self.redis.set(self.lock_key, owner, nx=True, px=int(self.lock_ttl * 1000)):
                try:
                    cached = self.cached()
                    if (
                        cached is not None
                        and cached.access_token != stale
                        and time.time() < cached.refresh_at
                    ):
                        return cached.access_token
                    return self._refresh_locked()
                finally:
                    self._release(keys=[self.lock_key], args=[owner])
            if (
                cached is not None
                and cached.access_token != stale
                and now < cached.expires_at - 1.0
            ):
                return cached.access_token  # still valid; someone is refreshing it
            if time.monotonic() >= deadline:
                raise TransientZohoError(
                    "TOKEN_REFRESH_WAIT",
                    f"another process held the token refresh lock for over {self.wait:.0f} s",
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _refresh_locked(self) -> str:
        blocked = cast(int, self.redis.pttl(self.blocked_key))
        if blocked and blocked > 0:
            raise TokenRefreshThrottled(
                "TOKEN_REFRESH_BLOCKED",
                f"Zoho throttled token refreshes; not asking again for {blocked / 1000:.0f} s",
                None,
                None,
                blocked / 1000,
            )
        failed = cast(bytes | None, self.redis.get(self.failed_key))
        if failed:
            raise TokenRefreshError(
                failed.decode(),
                f"the token endpoint refused the refresh token less than "
                f"{FAILED_MEMORY:.0f} s ago; not asking again yet",
            )
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(self.count_key, "-inf", now - self.refresh_window)
        pipe.zrange(self.count_key, 0, 0, withscores=True)
        pipe.zcard(self.count_key)
        _, oldest, count = pipe.execute()
        if count >= self.refresh_limit:
            retry_after = (
                (oldest[0][1] + self.refresh_window - now) if oldest else self.refresh_window
            )
            raise TokenRefreshThrottled(
                "TOKEN_REFRESH_LIMIT",
                f"refused to refresh the Zoho token: {count} refreshes in the last "
                f"{self.refresh_window:.0f} s reach the limit of {self.refresh_limit} (Zoho blocks "
                f"the refresh token beyond 10 per 10 min); retry in {retry_after:.0f} s",
                {"refreshes": count, "limit": self.refresh_limit},
                None,
                max(0.0, retry_after),
            )
        pipe = self.redis.pipeline()
        pipe.zadd(self.count_key, {uuid.uuid4().hex: now})
        pipe.expire(self.count_key, int(self.refresh_window) + 60)
        pipe.execute()
        return self._call_token_endpoint()

    def _call_token_endpoint(self) -> str:
        s = self.settings
        started = time.monotonic()
        try:
            response = self.session.post(
                self.endpoints.token_url,
                data={
                    "grant_type": "refresh_token",
                    "client_id": s.client_id,
                    "client_secret": s.client_secret.reveal(),
                    "refresh_token": s.refresh_token.reveal(),
                },
                timeout=(s.connect_timeout, s.read_timeout),
            )
        except requests.RequestException as exc:
            cause = error_from(exc)
            raise TokenEndpointUnavailable(
                cause.code, f"token endpoint: {cause.message}", None, None
            ) from None
        if response.status_code >= 500:
            raise TokenEndpointUnavailable(
                "TOKEN_ENDPOINT",
                f"token endpoint answered HTTP {response.status_code}",
                None,
                response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TokenRefreshError(
                "TOKEN_RESPONSE",
                f"token endpoint answered HTTP {response.status_code} without JSON",
                None,
                response.status_code,
            )
        token = body.get("access_token")
        if not token:
            # masked: an answer that echoes the form would repeat the secret and refresh token
            sent = (s.client_secret.reveal(), s.refresh_token.reveal())
            code = mask(str(body.get("error") or f"HTTP_{response.status_code}"), sent)
            description = mask(str(body.get("error_description") or ""), sent)
            if code.lower() in THROTTLE_ERRORS or response.status_code == 429:
                self.redis.set(self.blocked_key, "1", px=int(self.refresh_window * 1000))
                raise TokenRefreshThrottled(
                    "TOKEN_REFRESH_THROTTLED",
                    f"Zoho throttled token refreshes ({code}: {description}); "
                    f"not asking again for {self.refresh_window:.0f} s",
                    {"error": code},
                    response.status_code,
                    self.refresh_window,
                )
            # Remembered briefly so other workers do not spend the 10-per-10-min allowance too.
            self.redis.set(self.failed_key, code, px=int(FAILED_MEMORY * 1000))
            raise TokenRefreshError(
                code,
                description or "the token endpoint refused the refresh token",
                {"client_id": s.client_id},
                response.status_code,
            )
        lifetime = token_lifetime(body)
        margin = min(self.margin, lifetime / 4)
        now = time.time()
        cached = CachedToken(
            str(token), now + lifetime - margin, now + lifetime, body.get("api_domain")
        )
        self.redis.set(
            self.token_key,
            json.dumps(
                {
                    "access_token": cached.access_token,
                    "refresh_at": cached.refresh_at,
                    "expires_at": cached.expires_at,
                    "api_domain": cached.api_domain,
                }
            ),
            px=max(1, int(lifetime * 1000)),
        )
        log.info(
            "refreshed the Zoho access token in %.3f s (valid %.0f s, refresh after %.0f s)",
            time.monotonic() - started,
            lifetime,
            lifetime - margin,
        )
        return cached.access_token
