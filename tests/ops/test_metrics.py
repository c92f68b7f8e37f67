"""The web process's ``/metrics``: values read from a real ledger, served over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cli.web import make_http_server, make_wsgi_app
from pipeline.ledger import RowError
from pipeline.metrics import wsgi_app
from pipeline.secret import Secret
from pipeline.settings import Settings
from tests.cli.helpers import add_errors, query
from tests.fixtures.db import LEGACY_ROWS, PG_SERVER


def _serve(settings: Settings) -> Iterator[str]:
    app = make_wsgi_app(
        lookup=lambda token: None, enqueue=lambda batch_id: None, checks={},
        metrics=wsgi_app(settings),
    )  # fmt: skip
    server = make_http_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_url(legacy_db: Settings) -> Iterator[str]:
    yield from _serve(legacy_db)


def test_metrics_read_the_ledger(legacy_db: Settings, metrics_url: str) -> None:
    settings = legacy_db
    before = _scrape(metrics_url)
    assert before[("ordersync_pending_rows", ())] == LEGACY_ROWS
    assert before[("ordersync_rows_synced_total", ())] == 0
    assert before[("ordersync_job_duration_seconds_count", ())] == 0

    query(settings, "UPDATE orders SET synced = true WHERE id <= 10")
    query(
        settings,
        "UPDATE orders SET sync_pending_since = now() - interval '1 hour' WHERE id = 50",
    )
    ledger = "INSERT INTO ordersync.batches (kind, state, row_count, stats, job_requested_at,"
    query(
        settings,
        ledger + " finished_at, updated_at) VALUES"
        " ('bulk', 'reconciled', 7, '{\"ok\": 7}', now() - interval '90 s', now(), now()),"
        " ('realtime', 'reconciled', 4, '{\"ok\": 4, \"marked\": 3}', NULL, now(), now()),"
        " ('bulk', 'uploaded', 5, '{}', NULL, NULL, now() - interval '1 hour'),"
        " ('bulk', 'failed', 5, '{}', NULL, now(), now())",
    )
    query(settings, "INSERT INTO ordersync.credit_ledger (api, credits) VALUES ('bulk', 500)")
    add_errors(settings, [RowError("20", "INVALID_DATA", "Email", "bad")], times=1)  # held
    add_errors(settings, [RowError("21", "LIMIT_EXCEEDED", None, "busy")], times=1)  # not

    after = _scrape(metrics_url)
    budget = settings.zoho.daily_credit_budget - settings.zoho.credit_reserve
    assert after[("ordersync_credits_spent_24h", ())] == 500
    assert after[("ordersync_credits_left_24h", ())] == budget - 500
    assert after[("ordersync_pending_rows", ())] == LEGACY_ROWS - 10
    assert 3590 < after[("ordersync_oldest_pending_age_seconds", ())] < 3700
    assert after[("ordersync_rows_synced_total", ())] == 7 + 3  # bulk ok + realtime marked
    assert after[("ordersync_rows_in_error", ())] == 2
    assert after[("ordersync_rows_quarantined", ())] == 1
    assert after[("ordersync_rows_in_error_by_code", (("code", "INVALID_DATA"),))] == 1
    assert after[("ordersync_rows_in_error_by_code", (("code", "LIMIT_EXCEEDED"),))] == 1
    assert after[("ordersync_credits_budget_24h", ())] == settings.zoho.daily_credit_budget
    assert after[("ordersync_batches", (("state", "reconciled"),))] == 2 + 2  # + add_errors'
    assert after[("ordersync_batches", (("state", "uploaded"),))] == 1
    assert after[("ordersync_batches", (("state", "failed"),))] == 1
    assert after[("ordersync_batches", (("state", "job_created"),))] == 0
    assert after[("ordersync_batch_stuck", ())] == 1
    assert after[("ordersync_job_duration_seconds_count", ())] == 1
    assert 89 < after[("ordersync_job_duration_seconds_sum", ())] < 100
    assert after[("ordersync_job_duration_seconds_bucket", (("le", "60.0"),))] == 0
    assert after[("ordersync_job_duration_seconds_bucket", (("le", "120.0"),))] == 1
    assert after[("ordersync_job_duration_seconds_bucket", (("le", "+Inf"),))] == 1


def test_metrics_without_a_database_answer_without_ledger_metrics(
    legacy_db: Settings,
) -> None:
    missing = replace(
        legacy_db,
        source=replace(legacy_db.source, dsn=Secret(f"{PG_SERVER}/ordersync_no_such_db")),
    )
    for url in _serve(missing):
        samples = _scrape(url)
        assert not [name for name, _ in samples if name.startswith("ordersync_")]
        assert ("process_resident_memory_bytes", ()) in samples  # the process still reports
