"""The ``web`` process over real HTTP: /healthz against real PostgreSQL and Redis; the callback."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import pytest
import redis
import requests
from celery import Celery

from cli.web import (
    BatchId,
    HealthCheck,
    check_broker,
    check_database,
    enqueue_poll,
    make_http_server,
    make_wsgi_app,
)
from pipeline.initial_sync import callback_path
from pipeline.initial_sync import fresh_token as new_callback_token
from tasks.config import Queue
from tests.fixtures.celery import CeleryTestEnv, make_celery_env

DB_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TIMEOUT = 10


@contextmanager
def serving(
    lookup: Callable[[str], BatchId | None],
    enqueue: Callable[[BatchId], None],
    checks: Mapping[str, HealthCheck],
) -> Iterator[str]:
    server = make_http_server(make_wsgi_app(lookup=lookup, enqueue=enqueue, checks=checks))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


TOKEN = new_callback_token()
OTHER_TOKEN = new_callback_token()


@pytest.fixture
def enqueued() -> list[BatchId]:
    return []


@pytest.fixture
def web(enqueued: list[BatchId], celery_sender: Celery) -> Iterator[str]:
    batches: dict[str, BatchId] = {TOKEN: 17, OTHER_TOKEN: 18}
    checks = {"db": partial(check_database, DB_DSN), "broker": partial(check_broker, celery_sender)}
    with serving(batches.get, enqueued.append, checks) as base:
        yield base


def test_healthz_ok_when_database_and_broker_answer(web: str) -> None:
    answer = requests.get(f"{web}/healthz", timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "checks": {"db": "ok", "broker": "ok"}}


@pytest.mark.parametrize("broken", ["db", "broker"])
def test_healthz_503_names_the_unreachable_dependency(broken: str, celery_sender: Celery) -> None:
    dead_broker = make_celery_env(broker_url="redis://127.0.0.1:1/0").make_app()
    dsn = "postgresql://postgres@127.0.0.1:1/postgres" if broken == "db" else DB_DSN
    broker_app = dead_broker if broken == "broker" else celery_sender
    checks = {"db": partial(check_database, dsn), "broker": partial(check_broker, broker_app)}
    try:
        with serving(lambda token: None, lambda batch: None, checks) as base:
            answer = requests.get(f"{base}/healthz", timeout=TIMEOUT)
    finally:
        dead_broker.close()
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable"
    assert body["checks"][broken].startswith("error: ")
    healthy = "db" if broken == "broker" else "broker"
    assert body["checks"][healthy] == "ok"


def test_callback_with_right_token_enqueues_that_batch_once_and_ignores_the_body(
    web: str, enqueued: list[BatchId], caplog: pytest.LogCaptureFixture
) -> None:
    lying_body: dict[str, Any] = {"job_id": "999", "status": "COMPLETED", "batch_id": 18}
    with caplog.at_level(logging.INFO, logger="cli.web"):
        started = time.perf_counter()
        answer = requests.post(f"{web}{callback_path(TOKEN)}", json=lying_body, timeout=TIMEOUT)
        elapsed = time.perf_counter() - started
        # The access line is written after the answer has gone out: give it a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            "/zoho/callback/***" in record.getMessage() for record in caplog.records
        ):
            time.sleep(0.02)
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted"}
    assert enqueued == [17]  # the token's batch, whatever the body says
    assert elapsed < 2.0  # no slow work on the request path (typically a few ms)
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    assert any("/zoho/callback/***" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "path",
    [
        callback_path(new_callback_token()),  # well-formed, unknown
        callback_path(TOKEN[:-1]),  # one character short
        callback_path(TOKEN + "x"),
        callback_path(TOKEN) + "/extra",
        callback_path(""),
        "/zoho/callback",
    ],
)
def test_callback_with_wrong_token_is_404_and_enqueues_nothing(
    web: str, enqueued: list[BatchId], path: str
) -> None:
    answer = requests.post(f"{web}{path}", data=b"{}", timeout=TIMEOUT)
    assert answer.status_code == 404
    assert enqueued == []


def test_callback_only_takes_post(web: str, enqueued: list[BatchId]) -> None:
    answer = requests.get(f"{web}{callback_path(TOKEN)}", timeout=TIMEOUT)
    assert answer.status_code == 405
    assert enqueued == []


def test_a_failing_hook_answers_503_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    def broken_enqueue(batch_id: BatchId) -> None:
        raise ConnectionError("broker down")

    with (
        caplog.at_level(logging.INFO, logger="cli.web"),
        serving({TOKEN: 5}.get, broken_enqueue, {}) as base,
    ):
        answer = requests.post(f"{base}{callback_path(TOKEN)}", timeout=TIMEOUT)
    assert answer.status_code == 503
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_enqueue_poll_sends_ordersync_poll_to_the_zoho_queue(
    celery_env: CeleryTestEnv, celery_sender: Celery
) -> None:
    enqueue_poll(17, celery_app=celery_sender)

    client = redis.Redis.from_url(celery_env.broker_url)
    try:
        key = f"{celery_env.namespace}:{celery_env.queue(Queue.ZOHO)}"
        messages = cast(list[bytes], client.lrange(key, 0, -1))
        assert client.llen(f"{celery_env.namespace}:{celery_env.queue(Queue.DB)}") == 0
    finally:
        client.close()
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == "ordersync.poll"
    assert message["content-type"] == "application/json"
    args, kwargs, _embed = json.loads(_body(message))
    assert (args, kwargs) == ([], {"batch_id": 17, "by_callback": True})


def _body(message: dict[str, Any]) -> str:
    body: str = message["body"]
    if message["properties"]["body_encoding"] == "base64":
        return base64.b64decode(body).decode()
    return body


def test_metrics_wants_the_bearer_token_when_one_is_set() -> None:
    token = new_callback_token()  # any strong secret

    def metrics(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ordersync_up 1\n"]

    app = make_wsgi_app(lookup=lambda t: None, enqueue=lambda b: None, checks={},
                        metrics=metrics, metrics_token=token)  # fmt: skip
    server = make_http_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        missing = requests.get(f"{base}/metrics", timeout=TIMEOUT)
        assert missing.status_code == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
        wrong = {"Authorization": f"Bearer {token[:-1]}x"}
        assert requests.get(f"{base}/metrics", headers=wrong, timeout=TIMEOUT).status_code == 401
        basic = {"Authorization": f"Basic {token}"}
        assert requests.get(f"{base}/metrics", headers=basic, timeout=TIMEOUT).status_code == 401
        right = requests.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
        )
        assert right.status_code == 200 and right.text == "ordersync_up 1\n"
        assert requests.get(f"{base}/healthz", timeout=TIMEOUT).status_code == 200  # open
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("token", ["k3Q9z", "CHANGE_ME_metrics_token_value"])
def test_the_web_process_refuses_a_weak_metrics_token(token: str) -> None:
    env = {**os.environ, "ORDERSYNC_SYNC_METRICS_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "web", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "ORDERSYNC_SYNC_METRICS_TOKEN" in done.stderr and "ordersync secret new" in done.stderr
    assert token not in done.stderr
