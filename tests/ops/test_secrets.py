"""No secret in any log line or task message; the callback endpoint refuses tokens it did not give.

A whole sync runs with a client secret and a refresh token of known, distinctive values (a
dedicated zohosim accepts exactly those): the initial sync through the chain of tasks (bulk
jobs, Zoho's callbacks to the real ``ordersync web`` process, result downloads, row errors),
then a near-real-time flush of edited rows (upserts), with the access token invalidated twice
on the way so the workers refresh it. Everything the processes say is captured: the worker at
DEBUG (which logs every task's arguments as it applies it), the web process, the CLI's output,
every task event the worker sends (``task-received`` carries the arguments and keyword
arguments of every message it consumed, read here like Flower does), the broker's queues
sampled while the run goes (messages decoded) and our Redis keys. Neither secret, nor the
access token in use, may be found in any of it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests
from celery import Celery

from pipeline.initial_sync import CALLBACK_PREFIX, run_progress
from pipeline.initial_sync import fresh_token as new_callback_token
from pipeline.settings import Settings
from tests.cli.helpers import query
from tests.deploy.deployfiles import Process, free_port
from tests.fixtures.celery import CeleryTestEnv
from tests.ops.helpers import (
    BULK_BATCH,
    REDIS_URL,
    REPO,
    add_rows,
    redis_cleanup,
    sync_env,
    wait_until,
)
from zohosim.testing import SimProcess

TIMEOUT = 5


@pytest.fixture
def sentinel_sim() -> Iterator[SimProcess]:
    """A zohosim that accepts only this test's distinctive credentials (jobs take ~0.2 s)."""
    marker = secrets.token_hex(8)
    sim = SimProcess(
        env={
            "ZOHOSIM_CLIENT_SECRET": f"cs-SENTINEL-{marker}-secret",
            "ZOHOSIM_REFRESH_TOKEN": f"1000.rt-SENTINEL-{marker}.refresh",
        }
    )
    try:
        sim.admin.configure(job_rows_per_second=1_000)
        yield sim
    finally:
        sim.stop()


class EventLog:
    """Every Celery event of the namespace, as Flower would receive it, in a thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "event receiver did not start"

    def _run(self) -> None:
        with self.app.connection() as conn:
            receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.ready.set()
            while not self.stopping:
                with contextlib.suppress(TimeoutError, OSError):
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)


class BrokerSampler:
    """Decoded task messages found in the namespace's Redis keys, sampled every 50 ms."""

    def __init__(self, namespace: str, broker_url: str) -> None:
        self.namespace = namespace
        self.client = redis.Redis.from_url(broker_url)
        self.messages: list[str] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _decode(self, raw: bytes) -> str:
        text = raw.decode("utf-8", errors="replace")
        with contextlib.suppress(ValueError, TypeError, KeyError):
            envelope = json.loads(text)
            if isinstance(envelope, list):  # the unacked hash: [message, exchange, routing key]
                envelope = envelope[0]
            body = base64.b64decode(envelope["body"]).decode("utf-8", errors="replace")
            return f"{text}\n{body}"
        return text

    def _run(self) -> None:
        while not self.stopping:
            for key in self.client.scan_iter(match=f"{self.namespace}:*", count=500):
                kind = self.client.type(key)
                values: list[bytes] = []
                if kind == b"list":
                    values = cast(list[bytes], self.client.lrange(key, 0, -1))
                elif kind == b"hash":
                    values = cast(list[bytes], self.client.hvals(key))
                self.messages += [self._decode(v) for v in values]
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)
        self.client.close()


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_no_secret_in_logs_or_task_messages_and_callbacks_need_a_real_token(
    legacy_db: Settings,
    sentinel_sim: SimProcess,
    celery_env: CeleryTestEnv,
    celery_sender: Celery,
    tmp_path: Path,
) -> None:
    sim = sentinel_sim
    # enough rows for a bulk job (with its callback) and an upsert round after it
    total = add_rows(legacy_db)
    assert total >= BULK_BATCH + 100
    client_secret, refresh_token = sim.client_secret, sim.refresh_token
    assert "SENTINEL" in client_secret and "SENTINEL" in refresh_token
    prefix = f"test:ops:{uuid.uuid4().hex}"
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    env = celery_env.env(
        **sync_env(
            legacy_db, sim, prefix, batch_size=BULK_BATCH,
            ORDERSYNC_ZOHO_CALLBACK_URL=web_url,
            ORDERSYNC_SYNC_REALTIME_MAX_DELAY="1",
            ORDERSYNC_SYNC_MODE="realtime",
        ),
        PYTHONPATH=str(REPO),
    )  # fmt: skip
    hostname = f"{celery_env.namespace}-secrets@localhost"
    worker = Process(
        [sys.executable, "-m", "celery", "-A", "tasks.app", "worker",
         "-Q", ",".join(celery_env.queues), "-c", "2", "-n", hostname, "-E",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "DEBUG"],
        env, tmp_path / "worker.log",
    )  # fmt: skip
    web = Process(
        [sys.executable, "-m", "cli.main", "web", "--port", str(web_port)],
        env, tmp_path / "web.log",
    )  # fmt: skip
    events = EventLog(celery_sender)
    broker = BrokerSampler(celery_env.namespace, celery_env.broker_url)
    outputs: list[str] = []
    token_values: set[str] = set()
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        while not celery_sender.control.ping(destination=[hostname], timeout=0.5):
            assert worker.alive(), worker.log()
            assert time.monotonic() < deadline, "worker not ready"

        def web_up() -> bool:
            assert web.alive(), web.log()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{web_url}/healthz", timeout=TIMEOUT).status_code == 200
            return False

        wait_until(web_up, 60, "web /healthz")

        def remember_token() -> None:
            raw = cast(bytes | None, cache.get(f"{prefix}:token"))
            if raw:
                token_values.add(str(json.loads(raw)["access_token"]))

        # The initial sync, started by the CLI as an operator would.
        started = _cli(env, "sync", "initial", "--no-follow")
        outputs += [started.stdout, started.stderr]
        assert started.returncode == 0, started.stderr
        run_id = int(re.search(r"initial run (\d+)", started.stdout).group(1))  # type: ignore[union-attr]
        wait_until(lambda: cache.get(f"{prefix}:token"), 60, "a token in the cache")
        remember_token()
        sim.admin.invalidate_tokens()  # the workers must refresh mid-run

        def done() -> dict[str, Any] | None:
            remember_token()
            progress = run_progress(legacy_db, run_id)
            return progress if progress["state"] != "running" else None

        progress = wait_until(done, 150, f"run {run_id} to finish")
        assert progress["state"] == "done", progress
        callbacks = web.log().count("poll enqueued")
        assert callbacks >= 1, "no job called back to the web process"
        kinds = dict(
            query(legacy_db, "SELECT kind, count(*) FROM ordersync.batches WHERE run_id = %s"
                  " GROUP BY kind", (run_id,))
        )  # fmt: skip
        assert kinds.get("bulk") == 1 and kinds.get("realtime", 0) >= 1, kinds

        # Near-real-time: edited rows go as upserts, after one more forced refresh.
        sim.admin.invalidate_tokens()
        query(legacy_db, "UPDATE orders SET notes = 'edited for the secrets test' WHERE id <= 30")
        time.sleep(1.2)  # older than realtime_max_delay
        celery_sender.send_task("ordersync.realtime.check")
        wait_until(
            lambda: query(legacy_db, "SELECT count(*) FROM orders WHERE id <= 30 AND NOT synced"
                          " AND id NOT IN (SELECT row_key::bigint FROM ordersync.row_errors)")[0][0]
            == 0,
            60, "the edited rows to be upserted",
        )  # fmt: skip
        remember_token()
        for args in (("status",), ("errors",), ("config", "show"), ("config", "check")):
            done_cli = _cli(env, *args)
            outputs += [done_cli.stdout, done_cli.stderr]
            assert done_cli.returncode in (0, 1), (args, done_cli.stderr)

        # Tokens the web process did not hand out find nothing: 404, and nothing is enqueued.
        enqueued = web.log().count("poll enqueued")
        forged = [new_callback_token(), "x" * 43, "short", "../healthz", "%00" + "a" * 40]
        for token in forged:
            answer = requests.post(
                f"{web_url}{CALLBACK_PREFIX}{token}", json={"id": "1", "status": "COMPLETED"},
                timeout=TIMEOUT,
            )  # fmt: skip
            assert answer.status_code == 404, (token, answer.status_code)
        wrong_method = requests.get(f"{web_url}{CALLBACK_PREFIX}{forged[0]}", timeout=TIMEOUT)
        assert wrong_method.status_code == 405
        assert web.log().count("poll enqueued") == enqueued
        assert forged[0] not in web.log()  # tokens are redacted from the access log
    finally:
        events.stop()
        broker.stop()
        web.stop()
        worker.stop()
        redis_keys = {
            key.decode(): cast(bytes | None, cache.dump(key)) or b""
            for key in cache.scan_iter(match=f"{prefix}:*")
        }
        cache.close()
        redis_cleanup(prefix)

    worker_log, web_log = worker.log(), web.log()
    received = [e for e in events.events if e.get("type") == "task-received"]
    names = {e["name"] for e in received}
    assert {"ordersync.initial.start", "ordersync.upload", "ordersync.reconcile"} <= names
    assert "ordersync.upsert" in names  # the run's upsert round went through a task message too
    assert "ordersync.realtime.check" in names
    assert "TaskPool: Apply" in worker_log  # DEBUG: the arguments of every task applied
    assert re.search(r"'kwargsrepr': \"\{'batch_id': \d+", worker_log), "no task arguments logged"
    assert any("batch_id" in str(e.get("kwargs")) for e in received), "events lack arguments"
    assert any("batch_id" in m for m in broker.messages), "no task message body decoded"
    assert broker.messages, "the broker sampler saw no message"
    assert token_values, "no access token seen"
    haystacks = {
        "worker log": worker_log,
        "web log": web_log,
        "CLI output": "\n".join(outputs),
        "task events": json.dumps(events.events, default=str),
        "broker messages": "\n".join(broker.messages),
        "our Redis keys": "\n".join(redis_keys),
        "our Redis values": "\n".join(v.decode("latin-1") for v in redis_keys.values()),
    }
    secret_values = {"client secret": client_secret, "refresh token": refresh_token}
    secret_values |= {f"access token {i}": t for i, t in enumerate(sorted(token_values))}
    for where, text in haystacks.items():
        assert text, where
        for what, value in secret_values.items():
            if where == "our Redis values" and what.startswith("access token"):
                continue  # the shared token cache holds the access token: that is its job
            assert value not in text, f"the {what} leaked into the {where}"
    print(
        f"checked {len(received)} task messages, {len(broker.messages)} broker samples,"
        f" {len(worker_log.splitlines())} worker and {len(web_log.splitlines())} web log lines,"
        f" {len(token_values)} access tokens, {callbacks} callbacks"
    )
