"""A concurrency governor shared by every process and host through Redis.

Each call in flight holds a *lease*: a member of a sorted set scored by its expiry time (Redis
server time, so hosts' clocks do not matter). A Lua script drops expired leases and then adds the
new one only if the set is below its limit — atomically. Upserts of more than 10 records take a
lease in the ``sub`` set as well (sub-concurrency counts inside the total, contract §7.3).

Leases last ``lease_ttl`` seconds and are renewed by one background thread per process while the
call runs, so a long upload keeps its slot while a worker that dies loses it within ``lease_ttl``.
Waiting for a slot is not a failure: ``slot()`` waits on a wake-up list that every release
pushes to (``BLPOP`` with a short timeout, so leases that expired unreleased are noticed too) for
up to ``max_wait`` seconds, and only then raises ``SlotWaitTimeout`` (transient; nothing was sent).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis

from pipeline.zoho.errors import SlotWaitTimeout

log = logging.getLogger(__name__)

# KEYS: the sets to take a lease in. ARGV: lease id, ttl ms, then one limit per key.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return 0
  end
end
local expiry = now + tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2]) * 4)
end
return 1
"""

# KEYS: sets; ARGV: ttl ms, lease ids. Extends leases still present (XX: never revives one).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  for i = 2, #ARGV do
    redis.call('ZADD', key, 'XX', expiry, ARGV[i])
  end
  redis.call('PEXPIRE', key, tonumber(ARGV[1]) * 4)
end
return 1
"""


class Governor:
    """At most ``concurrency`` Zoho calls at once, of which at most ``sub_concurrency`` are
    upserts of more than 10 records, across every process sharing ``redis`` and ``prefix``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        prefix: str,
        concurrency: int,
        sub_concurrency: int,
        *,
        lease_ttl: float = 30.0,
        max_wait: float = 120.0,
    ) -> None:
        if concurrency < 1 or sub_concurrency < 1:
            raise ValueError("concurrency and sub_concurrency must be >= 1")
        self.redis = redis_client
        self.concurrency = concurrency
        self.sub_concurrency = min(sub_concurrency, concurrency)
        self.lease_ttl = lease_ttl
        self.max_wait = max_wait
        self.all_key = f"{prefix}:gov:all"
        self.sub_key = f"{prefix}:gov:sub"
        self.wake_key = f"{prefix}:gov:wake"
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._renew = redis_client.register_script(_RENEW)
        self._held: dict[str, tuple[str, ...]] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (
            f"Governor({self.all_key!r}, concurrency={self.concurrency}, "
            f"sub={self.sub_concurrency})"
        )

    def try_acquire(self, heavy: bool = False) -> str | None:
        """Take a lease now if a slot is free; its id, or None."""
        keys = (self.all_key, self.sub_key) if heavy else (self.all_key,)
        limits = (self.concurrency, self.sub_concurrency) if heavy else (self.concurrency,)
        lease = uuid.uuid4().hex
        ttl_ms = int(self.lease_ttl * 1000)
        if not self._acquire(keys=list(keys), args=[lease, ttl_ms, *limits]):
            return None
        self._track(lease, keys)
        return lease

    def acquire(self, heavy: bool = False, max_wait: float | None = None) -> str:
        """Wait (bounded) for a slot and return its lease id; then ``SlotWaitTimeout``.

        A waiter blocks on the wake-up list (``BLPOP``) that every release pushes to, so a freed
        slot is taken at once; the short timeout also catches leases that expired unreleased.
        """
        bound = self.max_wait if max_wait is None else max_wait
        deadline = time.monotonic() + bound
        while True:
            lease = self.try_acquire(heavy)
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                raise SlotWaitTimeout(
                    "SLOT_WAIT_TIMEOUT",
                    f"no free Zoho call slot within {bound:.0f} s "
                    f"(concurrency {self.concurrency}, sub-concurrency {self.sub_concurrency})",
                    {"heavy": heavy},
                )
            self.redis.blpop([self.wake_key], timeout=min(left, random.uniform(0.05, 0.1)))

    def release(self, lease: str) -> None:
        """Give a lease back (idempotent) and wake one waiter."""
        with self._held_lock:
            keys = self._held.pop(lease, (self.all_key, self.sub_key))
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, lease)
        pipe.rpush(self.wake_key, 1)
        pipe.ltrim(self.wake_key, -self.concurrency, -1)  # no pile of stale wake-ups
        pipe.pexpire(self.wake_key, int(self.lease_ttl * 1000))
        pipe.execute()

    @contextmanager
    def slot(self, heavy: bool = False, max_wait: float | None = None) -> Iterator[str]:
        """Hold a slot for the body of the ``with`` block."""
        lease = self.acquire(heavy, max_wait)
        try:
            yield lease
        finally:
            self.release(lease)

    def in_flight(self) -> tuple[int, int]:
        """(calls, heavy calls) currently holding unexpired leases, all processes together."""
        seconds, micros = cast(tuple[int, int], self.redis.time())
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return (
            cast(int, self.redis.zcount(self.all_key, now_ms, "+inf")),
            cast(int, self.redis.zcount(self.sub_key, now_ms, "+inf")),
        )

    # -- lease renewal -------------------------------------------------------------------------
    def _track(self, lease: str, keys: tuple[str, ...]) -> None:
        with self._held_lock:
            if self._pid != os.getpid():  # forked: the parent's thread and leases are not ours
                self._held, self._renewer, self._pid = {}, None, os.getpid()
            self._held[lease] = keys
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(
                    target=self._renew_loop, name="zoho-governor-renew", daemon=True
                )
                self._renewer.start()

    def _renew_loop(self) -> None:
        interval = self.lease_ttl / 3
        while True:
            time.sleep(interval)
            with self._held_lock:
                if self._pid != os.getpid():
                    return
                held = dict(self._held)
            if not held:
                continue
            ttl_ms = int(self.lease_ttl * 1000)
            try:
                for key in (self.all_key, self.sub_key):
                    leases = [lease for lease, keys in held.items() if key in keys]
                    if leases:
                        self._renew(keys=[key], args=[ttl_ms, *leases])
            except redis.RedisError as exc:
                log.warning("could not renew %s governor leases: %s", len(held), exc)
