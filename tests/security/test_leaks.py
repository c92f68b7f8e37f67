"""No secret anywhere a sync leaves traces: logs, task messages, Flower, CLI output, errors.

A whole sync runs with distinctive values (``S3CRET-…``, tests/security/conftest.py) for the
client secret, the refresh token and the password in the DSN (the test server trusts local
connections, so the password travels through every process without being needed). A dedicated
zohosim accepts exactly those credentials. The initial sync goes through the chain of tasks
(a bulk job, Zoho's callbacks to the real ``ordersync web`` process, result downloads, row
errors, an upsert round), then a near-real-time flush of edited rows driven by a real beat;
the access token is invalidated twice on the way, so the workers refresh it. zohosim answers
some calls with a body that repeats the request (``401-echo`` / ``500-echo`` faults: the
``Authorization`` header and body), retried ones during the run and, at the end, one flush
that fails for good (its error goes to the ledger, the task's failure to Flower).

Everything the processes say is captured: the worker, beat, web and Flower at DEBUG (the
worker logs every task's arguments as it applies it), the CLI's output (``status``,
``errors``, ``config show`` and ``check``, text and ``--json``), every task event the worker
sends (``task-received`` carries the arguments of every message, ``task-failed`` the
exception), Flower's task view (``/api/tasks``), the broker's queues and unacked messages
sampled while the run goes (bodies decoded) and our Redis keys. There is no result backend
(``tasks.config``): no task result is stored anywhere. None of the secrets, nor an access
token, nor a callback token, may be found in any of it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests
from celery import Celery

from pipeline.initial_sync import run_progress
from pipeline.settings import Settings
from tests.cli.helpers import query
from tests.deploy.deployfiles import Process, free_port
from tests.fixtures.celery import BeatProcess, CeleryTestEnv, WorkerFactory
from tests.ops.helpers import (
    BULK_BATCH,
    REDIS_URL,
    REPO,
    add_rows,
    redis_cleanup,
    running_flower,
    sync_env,
    wait_until,
)
from tests.security.conftest import Sentinels, with_password
from zohosim.testing import SimProcess

TIMEOUT = 5
CALLBACK_TOKEN = re.compile(r"/zoho/callback/[A-Za-z0-9_-]{20,}")


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
        self.keys: set[str] = set()
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
                self.keys.add(key.decode())
                kind = self.client.type(key)
                values: list[bytes] = []
                if kind == b"list":
                    values = cast(list[bytes], self.client.lrange(key, 0, -1))
                elif kind == b"hash":
                    values = cast(list[bytes], self.client.hvals(key))
                elif kind == b"string":
                    values = [cast(bytes, self.client.get(key) or b"")]
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
def test_no_secret_in_logs_tasks_flower_cli_or_errors_during_a_sync_and_a_flush(
    legacy_db: Settings,
    sentinels: Sentinels,
    sentinel_sim: SimProcess,
    celery_env: CeleryTestEnv,
    celery_sender: Celery,
    celery_worker_factory: WorkerFactory,
    celery_beat_factory: Any,
    tmp_path: Path,
) -> None:
    sim = sentinel_sim
    # enough rows for a bulk job (with its callback) and an upsert round after it
    total = add_rows(legacy_db)
    assert total >= BULK_BATCH + 100
    assert sim.client_secret == sentinels.client_secret
    prefix = f"test:security:{uuid.uuid4().hex}"
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    dsn = with_password(legacy_db.source.dsn.reveal(), sentinels.dsn_password)
    settings_env = sync_env(
        legacy_db, sim, prefix, batch_size=BULK_BATCH,
        ORDERSYNC_SOURCE_DSN=dsn,
        ORDERSYNC_ZOHO_CALLBACK_URL=web_url,
        ORDERSYNC_SYNC_REALTIME_MAX_DELAY="1",
        ORDERSYNC_SYNC_REALTIME_CHECK="1",
        ORDERSYNC_SYNC_MODE="realtime",
    )  # fmt: skip
    env = celery_env.env(**settings_env, PYTHONPATH=str(REPO))
    events = EventLog(celery_sender)
    broker = BrokerSampler(celery_env.namespace, celery_env.broker_url)
    outputs: list[str] = []
    token_values: set[str] = set()
    cache = redis.Redis.from_url(REDIS_URL)
    flower_tasks: list[str] = []
    web = Process(
        [sys.executable, "-m", "cli.main", "web", "--port", str(web_port), "--log-level", "DEBUG"],
        env, tmp_path / "web.log",
    )  # fmt: skip
    try:
        with running_flower(env, tmp_path / "flower.log", extra=("--logging=debug",)) as (
            flower_url, user, password,
        ):  # fmt: skip
            worker = celery_worker_factory(extra_env=settings_env, concurrency=2, loglevel="DEBUG")

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

            # The initial sync, started by the CLI as an operator would; answers that echo
            # the request on the way (the client retries them).
            started = _cli(env, "sync", "initial", "--no-follow")
            outputs += [started.stdout, started.stderr]
            assert started.returncode == 0, started.stderr
            run_id = int(re.search(r"initial run (\d+)", started.stdout).group(1))  # type: ignore[union-attr]
            wait_until(lambda: cache.get(f"{prefix}:token"), 60, "a token in the cache")
            remember_token()
            sim.admin.fault("bulk_get", "401-echo", count=1)  # refreshed, then asked again
            sim.admin.fault("upsert", "500-echo", count=1)  # retried
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
                query(legacy_db, "SELECT kind, count(*) FROM ordersync.batches"
                      " WHERE run_id = %s GROUP BY kind", (run_id,))
            )  # fmt: skip
            assert kinds.get("bulk") == 1 and kinds.get("realtime", 0) >= 1, kinds

            # Near-real-time: beat's checks send edited rows as upserts, after a refresh.
            beat: BeatProcess = celery_beat_factory(extra_env=settings_env, loglevel="DEBUG")
            sim.admin.invalidate_tokens()
            query(legacy_db, "UPDATE orders SET notes = 'edited for the leak test' WHERE id <= 30")
            wait_until(
                lambda: query(legacy_db, "SELECT count(*) FROM orders WHERE id <= 30 AND NOT"
                              " synced AND id NOT IN (SELECT row_key::bigint"
                              " FROM ordersync.row_errors)")[0][0] == 0,
                60, "the edited rows to be upserted",
            )  # fmt: skip
            remember_token()

            # One flush fails for good: refused twice (before and after a refresh), the
            # answers repeating the request. Its error reaches the ledger and Flower.
            sim.admin.fault("upsert", "401-echo", count=2)
            query(legacy_db, "UPDATE orders SET notes = 'edited again' WHERE id BETWEEN 31 AND 40")
            failed = wait_until(
                lambda: query(legacy_db, "SELECT error FROM ordersync.batches WHERE state ="
                              " 'failed' AND error LIKE '%%request refused%%'"),
                60, "a flush to fail with the echoed answer",
            )  # fmt: skip
            sim.admin.clear_faults()
            remember_token()
            for args in (
                ("status",), ("status", "--json"), ("errors",), ("errors", "--json"),
                ("config", "show"), ("config", "check"),
            ):  # fmt: skip
                done_cli = _cli(env, *args)
                outputs += [done_cli.stdout, done_cli.stderr]
                assert done_cli.returncode in (0, 1), (args, done_cli.stderr)

            def flower_saw_the_failure() -> bool:
                answer = requests.get(
                    f"{flower_url}/api/tasks", auth=(user, password), timeout=TIMEOUT
                )
                assert answer.status_code == 200
                tasks = answer.json()
                flower_tasks[:] = [answer.text]
                for task_id in list(tasks)[:40]:  # the per-task view too
                    one = requests.get(
                        f"{flower_url}/api/task/info/{task_id}", auth=(user, password),
                        timeout=TIMEOUT,
                    )  # fmt: skip
                    flower_tasks.append(one.text)
                return any(t.get("state") == "FAILURE" for t in tasks.values())

            wait_until(flower_saw_the_failure, 30, "Flower to show the failed flush")
    finally:
        events.stop()
        broker.stop()
        web.stop()
        redis_keys = {
            key.decode(): cast(bytes | None, cache.dump(key)) or b""
            for key in cache.scan_iter(match=f"{prefix}:*")
        }
        cache.close()
        redis_cleanup(prefix)
    flower_log = (tmp_path / "flower.log").read_text(encoding="utf-8", errors="replace")
    beat.stop()
    worker.stop()

    worker_log, web_log, beat_log = worker.log(), web.log(), beat.log()
    received = [e for e in events.events if e.get("type") == "task-received"]
    names = {e["name"] for e in received}
    assert {"ordersync.initial.start", "ordersync.upload", "ordersync.reconcile"} <= names
    assert "ordersync.upsert" in names  # the run's upsert round went through a task message
    assert "ordersync.realtime.check" in names
    assert "TaskPool: Apply" in worker_log  # DEBUG: the arguments of every task applied
    assert re.search(r"'kwargsrepr': \"\{'batch_id': \d+", worker_log), "no task arguments logged"
    assert "request refused" in worker_log  # the echoed answers reached the log, masked
    assert "Sending due task" in beat_log and "DEBUG" in beat_log
    assert " DEBUG " in web_log and "[D " in flower_log  # tornado marks DEBUG as [D
    assert any("batch_id" in str(e.get("kwargs")) for e in received), "events lack arguments"
    assert any(e.get("type") == "task-failed" for e in events.events), "no failure event"
    assert any("batch_id" in m for m in broker.messages), "no task message body decoded"
    assert not [k for k in broker.keys if "celery-task-meta" in k], "a result was stored"
    assert celery_sender.conf.result_backend in (None, "disabled")
    assert token_values, "no access token seen"
    assert '"FAILURE"' in flower_tasks[0] and "request refused" in "\n".join(flower_tasks)
    haystacks = {
        "worker log": worker_log,
        "beat log": beat_log,
        "web log": web_log,
        "Flower log": flower_log,
        "Flower task view": "\n".join(flower_tasks),
        "CLI output": "\n".join(outputs),
        "ledger errors": "\n".join(str(row[0]) for row in failed),
        "task events": json.dumps(events.events, default=str),
        "broker messages": "\n".join(broker.messages),
        "our Redis keys": "\n".join(redis_keys),
        "our Redis values": "\n".join(v.decode("latin-1") for v in redis_keys.values()),
    }
    secret_values = sentinels.named()
    secret_values |= {f"access token {i}": t for i, t in enumerate(sorted(token_values))}
    for where, text in haystacks.items():
        assert text, where
        for what, value in secret_values.items():
            if where == "our Redis values" and what.startswith("access token"):
                continue  # the shared token cache holds the access token: that is its job
            assert value not in text, f"the {what} leaked into the {where}"
        assert not CALLBACK_TOKEN.search(text), f"a callback token leaked into the {where}"
    print(
        f"checked {len(received)} task messages, {len(broker.messages)} broker samples,"
        f" {len(worker_log.splitlines())} worker, {len(beat_log.splitlines())} beat,"
        f" {len(web_log.splitlines())} web and {len(flower_log.splitlines())} Flower log lines,"
        f" {len(flower_tasks)} Flower task views, {len(token_values)} access tokens,"
        f" {callbacks} callbacks"
    )
