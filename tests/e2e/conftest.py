"""End-to-end fixtures: a seeded legacy database, zohosim, a web process, real Celery workers.

``make_e2e(rows=…, batch_size=…, …)`` gives an :class:`E2E`: the settings the test process and
its worker subprocesses share (built from the same ``ORDERSYNC_*`` variables), the shared
zohosim (reset), a callback receiver (``cli.web``) serving in a thread, a sender for the
test's Celery namespace, and helpers to start and follow a run, sweep, and compare zohosim
with the legacy table through the serialiser.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from cli.web import (
    enqueue_poll,
    lookup_batch_by_token,
    make_http_server,
    make_wsgi_app,
    record_callback_hint,
)
from pipeline import demo
from pipeline.initial_sync import run_progress, start_initial_run
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.mapping import FieldType
from pipeline.serialize import json_value, select_list, session_timezone_sql
from pipeline.settings import Settings, load_settings
from tests.fixtures.celery import CeleryTestEnv, WorkerFactory, WorkerProcess
from tests.fixtures.services import (
    PG_SERVER,
    REDIS_URL,
    create_database,
    delete_keys,
    drop_database,
    query,
)
from tests.fixtures.sim_settings import sim_env
from zohosim.testing import SimProcess


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` every 50 ms until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class E2E:
    settings: Settings
    env: dict[str, str]
    sim: SimProcess
    sender: Celery
    celery_env: CeleryTestEnv
    worker_factory: WorkerFactory
    callbacks: list[object] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    # -- processes and runs ----------------------------------------------------------------------
    def start_worker(self, concurrency: int = 1) -> WorkerProcess:
        worker = self.worker_factory(extra_env=self.env, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def start_run(self) -> int:
        run_id = start_initial_run(self.settings)
        self.sender.send_task("ordersync.initial.start", kwargs={"run_id": run_id})
        return run_id

    def wait_done(self, run_id: int, timeout: float = 120.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            progress = run_progress(self.settings, run_id)
            return progress if progress["state"] != "running" else None

        try:
            progress: dict[str, Any] = wait_until(finished, timeout, f"run {run_id} to finish")
        except AssertionError:
            logs = "\n".join(w.log()[-6000:] for w in self.workers)
            raise AssertionError(
                f"run {run_id} not finished: {run_progress(self.settings, run_id)}\n"
                f"{self.batches()}\n{logs}"
            ) from None
        return progress

    def sweep(self, older_than: float = 0.0) -> None:
        self.sender.send_task("ordersync.sweep", kwargs={"older_than": older_than})

    # -- reading state ---------------------------------------------------------------------------
    def query(self, text: str, params: Any = None) -> list[tuple[Any, ...]]:
        return query(self.settings, text, params)

    def batches(self) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT id, state, row_count, attempts, job_requests, error, stats"
            " FROM ordersync.batches ORDER BY id"
        )

    def batch_state(self, batch_id: int) -> str | None:
        rows = self.query("SELECT state FROM ordersync.batches WHERE id = %s", (batch_id,))
        return rows[0][0] if rows else None

    def calls(self, api: str) -> int:
        return int(self.sim.admin.credits()["calls_by_api"].get(api, 0))

    def unsynced(self) -> int:
        return int(self.query("SELECT count(*) FROM orders WHERE NOT synced")[0][0])

    def legacy_records(self) -> dict[str, tuple[dict[str, Any], str | None, bool]]:
        """Every legacy row as Zoho should hold it: key → (expected values, zoho_id, synced)."""
        conn = connect(self.settings)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(session_timezone_sql(self.settings.org_timezone))
                cur.execute(
                    "SELECT t.zoho_id, t.synced, "
                    + select_list(self.settings.mapping, "t").as_string(conn)
                    + " FROM orders t ORDER BY t.id"
                )
                rows = cur.fetchall()
        finally:
            conn.close()
        mapping = self.settings.mapping
        out = {}
        for zoho_id, synced, *texts in rows:
            values = {
                spec.api_name: json_value(spec, text)
                for spec, text in zip(mapping.fields, texts, strict=True)
            }
            out[str(values[mapping.unique_field])] = (values, zoho_id, bool(synced))
        return out

    def assert_zoho_holds_legacy(self, *, except_keys: frozenset[str] = frozenset()) -> None:
        """zohosim holds exactly the legacy rows (but ``except_keys``), field by field; each
        of them synced with its record id; no duplicate record."""
        records = self.sim.admin.records()
        keys = [str(r[self.settings.mapping.unique_field]) for r in records]
        assert len(keys) == len(set(keys)), "duplicate records in zohosim"
        by_key = {str(r[self.settings.mapping.unique_field]): r for r in records}
        legacy = self.legacy_records()
        expected_keys = set(legacy) - except_keys
        assert set(by_key) == expected_keys
        for key in expected_keys:
            values, zoho_id, synced = legacy[key]
            record = by_key[key]
            assert synced and zoho_id == str(record["id"]), (key, synced, zoho_id, record["id"])
            for spec in self.settings.mapping.fields:
                assert same_value(spec.type, values[spec.api_name], record.get(spec.api_name)), (
                    key, spec.api_name, values[spec.api_name], record.get(spec.api_name)
                )  # fmt: skip


def same_value(kind: FieldType, expected: object, actual: object) -> bool:
    """A legacy value (through the serialiser) and zohosim's stored value mean the same."""
    if expected is None:
        return actual in (None, "")
    if isinstance(expected, Decimal):
        return actual is not None and Decimal(str(actual)) == expected
    if kind is FieldType.DATETIME:
        return datetime.fromisoformat(str(expected)) == datetime.fromisoformat(str(actual))
    if kind is FieldType.INTEGER:
        return int(actual) == expected  # type: ignore[call-overload]
    return expected == actual


def worker_env(
    settings_dsn: str,
    sim: SimProcess,
    prefix: str,
    work_dir: Path,
    *,
    batch_size: int,
    in_flight: int,
    callback_url: str | None,
) -> dict[str, str]:
    env = {
        "ORDERSYNC_SOURCE_DSN": settings_dsn,
        **sim_env(sim, prefix),
        "ORDERSYNC_ZOHO_CONNECT_TIMEOUT": "2",
        "ORDERSYNC_ZOHO_READ_TIMEOUT": "15",
        "ORDERSYNC_ZOHO_MAX_RETRIES": "3",
        "ORDERSYNC_ZOHO_RETRY_BACKOFF": "0.05",
        "ORDERSYNC_ZOHO_RETRY_BACKOFF_MAX": "0.2",
        "ORDERSYNC_SYNC_REDIS_URL": REDIS_URL,
        "ORDERSYNC_SYNC_BATCH_SIZE": str(batch_size),
        "ORDERSYNC_SYNC_BATCHES_IN_FLIGHT": str(in_flight),
        "ORDERSYNC_SYNC_WORK_DIR": str(work_dir),
        "ORDERSYNC_SYNC_JOB_CALLBACK_WAIT": "30",
        "ORDERSYNC_SYNC_STALL_AFTER": "60",
    }
    if callback_url:
        env["ORDERSYNC_ZOHO_CALLBACK_URL"] = callback_url
    return env


MakeE2E = Callable[..., E2E]


@pytest.fixture
def make_e2e(
    zohosim: SimProcess,
    celery_env: CeleryTestEnv,
    celery_sender: Celery,
    celery_worker_factory: WorkerFactory,
    tmp_path: Path,
) -> Iterator[MakeE2E]:
    """Build the test's world; everything is torn down after the test."""
    databases: list[str] = []
    servers: list[Any] = []
    prefix = f"test:e2e:{uuid.uuid4().hex}"

    def make(
        *,
        rows: int,
        batch_size: int,
        bad_rows: int = 0,
        in_flight: int = 3,
        callback: bool = False,
        workers: int = 1,
        concurrency: int = 1,
    ) -> E2E:
        name = create_database("ordersync_e2e")
        databases.append(name)
        dsn = f"{PG_SERVER}/{name}"
        box: dict[str, Settings] = {}
        callbacks: list[object] = []

        def enqueue(batch_id: object) -> None:
            callbacks.append(batch_id)
            enqueue_poll(batch_id, celery_app=celery_sender)  # type: ignore[arg-type]

        app = make_wsgi_app(
            lookup=partial(lookup_batch_by_token, dsn, "ordersync"),
            enqueue=enqueue,
            checks={},
            record_hint=lambda batch_id, job_id: record_callback_hint(
                box["settings"], batch_id, job_id
            ),
        )
        server = make_http_server(app)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        callback_url = f"http://127.0.0.1:{server.server_port}" if callback else None
        env = worker_env(
            dsn, zohosim, prefix, tmp_path / "work", batch_size=batch_size,
            in_flight=in_flight, callback_url=callback_url,
        )  # fmt: skip
        settings = load_settings(
            env={**env, "ORDERSYNC_SYNC_BROKER_URL": celery_env.broker_url},
        )
        box["settings"] = settings
        conn = connect(settings)
        try:
            demo.seed(conn, settings, rows, bad_rows=bad_rows, seed=42)
        finally:
            conn.close()
        schema.install(settings)
        world = E2E(settings, env, zohosim, celery_sender, celery_env, celery_worker_factory,
                    callbacks=callbacks)  # fmt: skip
        for _ in range(workers):
            world.start_worker(concurrency=concurrency)
        return world

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
    for name in databases:
        drop_database(name)
    delete_keys(prefix)
