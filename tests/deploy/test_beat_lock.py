"""Only one beat schedules, even if two are started: the compose beat command, twice, against
the real Redis. One takes celery-redbeat's lock; the other waits, and takes over when the first
stops."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.settings import Settings
from tests.deploy.deployfiles import Process, as_argv, load_compose, run_healthcheck
from tests.fixtures.celery import CeleryTestEnv, cleanup_celery_env, make_celery_env
from tests.fixtures.services import delete_keys

ACQUIRED = "beat: Acquired lock"
STARTED = "beat: Starting"
MAX_INTERVAL = 1  # compose says 10; 1 s makes the hand-over quick, the mechanism is the same


@pytest.fixture
def beat_env() -> Iterator[CeleryTestEnv]:
    env = make_celery_env()
    yield env
    cleanup_celery_env(env)
    delete_keys(env.namespace, Settings().redis_url)  # redbeat's keys live in redis_url


def test_two_beats_one_scheduler(beat_env: CeleryTestEnv, tmp_path: Path) -> None:
    compose = load_compose()
    argv = as_argv(compose["services"]["beat"]["command"])
    assert argv[:3] == ["celery", "-A", "tasks.app"]
    argv[argv.index("--max-interval") + 1] = str(MAX_INTERVAL)
    argv = [sys.executable, "-m", "celery", *argv[1:]]
    beats = [Process(argv, beat_env.env(), tmp_path / f"beat{i}.log") for i in (1, 2)]
    try:
        for beat in beats:
            assert beat.wait_for_log(STARTED, 60), beat.log()
        deadline = time.monotonic() + 60
        while not any(ACQUIRED in b.log() for b in beats):
            assert time.monotonic() < deadline, "no beat took the lock"
            time.sleep(0.1)
        time.sleep(3 * MAX_INTERVAL)  # the waiting beat retries every max-interval
        holders = [b for b in beats if ACQUIRED in b.log()]
        assert len(holders) == 1, "both beats took the lock"
        (holder,) = holders
        (waiting,) = [b for b in beats if b is not holder]
        client = redis.Redis.from_url(Settings().redis_url)
        try:
            assert client.exists(f"{beat_env.namespace}:ordersync:redbeat:lock")
        finally:
            client.close()

        check = run_healthcheck(compose["services"]["beat"], beat_env.env())
        assert check.returncode == 0, check.stdout + check.stderr  # a beat holds the lock

        holder.stop()  # a clean stop releases the lock
        assert waiting.wait_for_log(ACQUIRED, 30), "the waiting beat did not take over"
        waiting.stop()
        check = run_healthcheck(compose["services"]["beat"], beat_env.env())
        assert check.returncode == 1, check.stdout + check.stderr  # nobody holds it: unhealthy
    finally:
        for beat in beats:
            beat.stop(signal.SIGKILL)
