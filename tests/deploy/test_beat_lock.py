"""Only one beat schedules, even if two are started: the compose beat command, twice, against
the real Redis. One takes celery-redbeat's lock; the other waits, and takes over when the first
stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.settings import Settings
from tests.deploy.deployfiles import REPO, as_argv, load_compose
from tests.fixtures.celery import CeleryTestEnv, cleanup_celery_env, make_celery_env

ACQUIRED = "beat: Acquired lock"
STARTED = "beat: Starting"
MAX_INTERVAL = "1"  # compose says 10; 1 s makes the hand-over quick, the mechanism is the same


class Beat:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def _wait(beats: list[Beat], text: str, timeout: float) -> list[Beat]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [b for b in beats if text in b.log()]
        if found:
            return found
        for b in beats:
            assert b.proc.poll() is None, f"beat exited:\n{b.log()[-3000:]}"
        time.sleep(0.1)
    return []


@pytest.fixture
def beat_env() -> Iterator[CeleryTestEnv]:
    env = make_celery_env()
    yield env
    cleanup_celery_env(env)
    client = redis.Redis.from_url(Settings().redis_url)  # redbeat's keys live in redis_url
    try:
        keys = list(client.scan_iter(match=f"{env.namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_two_beats_one_scheduler(beat_env: CeleryTestEnv, tmp_path: Path) -> None:
    argv = as_argv(load_compose()["services"]["beat"]["command"])
    assert argv[:3] == ["celery", "-A", "tasks.app"]
    argv[argv.index("--max-interval") + 1] = MAX_INTERVAL
    argv = [sys.executable, "-m", "celery", *argv[1:]]
    env = beat_env.env()
    beats = [Beat(argv, env, tmp_path / f"beat{i}.log") for i in (1, 2)]
    try:
        assert _wait(beats, ACQUIRED, 60), "no beat took the lock"
        deadline = time.monotonic() + 60
        while not all(STARTED in b.log() for b in beats) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3 * float(MAX_INTERVAL))  # the waiting beat retries every max-interval
        holders = [b for b in beats if ACQUIRED in b.log()]
        assert len(holders) == 1, "both beats took the lock"
        (holder,) = holders
        (waiting,) = [b for b in beats if b is not holder]
        lock_key = f"{beat_env.namespace}:ordersync:redbeat:lock"
        client = redis.Redis.from_url(Settings().redis_url)
        try:
            assert client.exists(lock_key), f"no lock at {lock_key}"
        finally:
            client.close()

        holder.stop()  # a clean stop releases the lock
        assert _wait([waiting], ACQUIRED, 30) == [waiting], "the waiting beat did not take over"
    finally:
        for b in beats:
            b.stop(signal.SIGKILL)
