"""The Celery configuration and retry policy as data (no broker, no worker)."""

from __future__ import annotations

import psycopg2
import pytest

from pipeline.zoho.errors import CreditBudgetExceeded, RateLimited
from tasks.base import (
    MAX_COUNTDOWN,
    RETRY_BACKOFF_MAX,
    TIME_LIMIT,
    TRANSIENT_ERRORS,
    OrdersyncTask,
    retry_countdown,
)
from tasks.config import (
    ENV_NAMESPACE,
    ENV_VISIBILITY_TIMEOUT,
    ROUTES,
    VISIBILITY_TIMEOUT,
    CeleryOptions,
    Queue,
    celery_config,
)


def test_visibility_timeout_is_far_above_every_countdown_and_time_limit() -> None:
    assert RETRY_BACKOFF_MAX <= MAX_COUNTDOWN
    assert VISIBILITY_TIMEOUT >= 2 * (MAX_COUNTDOWN + TIME_LIMIT)
    config = celery_config("redis://127.0.0.1:6379/0", CeleryOptions())
    assert config["broker_transport_options"] == {"visibility_timeout": VISIBILITY_TIMEOUT}


def test_production_names_are_stable_and_json_only() -> None:
    config = celery_config("redis://127.0.0.1:6379/0", CeleryOptions())
    assert [q.name for q in config["task_queues"]] == ["ordersync.db", "ordersync.zoho"]
    assert config["task_default_queue"] == "ordersync.db"
    assert config["control_exchange"] == "celery" and config["event_exchange"] == "celeryev"
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    assert all(name.startswith("ordersync.") for name in ROUTES)
    assert config["task_routes"]["ordersync.poll"] == {"queue": "ordersync.zoho"}


def test_a_namespace_prefixes_every_broker_name() -> None:
    options = CeleryOptions.from_env({ENV_NAMESPACE: "staging", ENV_VISIBILITY_TIMEOUT: "7200"})
    config = celery_config("redis://127.0.0.1:6379/0", options)
    assert options.queue_name(Queue.ZOHO) == "staging.ordersync.zoho"
    assert config["broker_transport_options"] == {
        "visibility_timeout": 7200,
        "global_keyprefix": "staging:",
    }
    assert config["control_exchange"] == "staging.celery"
    assert config["task_routes"]["ordersync.extract"] == {"queue": "staging.ordersync.db"}
    amqp = celery_config("amqp://guest:guest@127.0.0.1:5672//", options)
    assert "global_keyprefix" not in amqp["broker_transport_options"]


@pytest.mark.parametrize("raw", ["soon", "0", "-5"])
def test_a_bad_number_names_its_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=ENV_VISIBILITY_TIMEOUT):
        CeleryOptions.from_env({ENV_VISIBILITY_TIMEOUT: raw})


def test_only_the_transient_family_is_retried() -> None:
    assert OrdersyncTask.autoretry_for == TRANSIENT_ERRORS
    assert issubclass(RateLimited, TRANSIENT_ERRORS)
    assert issubclass(psycopg2.OperationalError, TRANSIENT_ERRORS)
    assert not issubclass(psycopg2.IntegrityError, TRANSIENT_ERRORS)
    assert not any(cls in (Exception, BaseException) for cls in TRANSIENT_ERRORS)
    assert 0 < OrdersyncTask.max_retries < 20
    assert OrdersyncTask.acks_late and OrdersyncTask.reject_on_worker_lost


def test_retry_countdown_honours_retry_after_and_the_cap() -> None:
    budget = CreditBudgetExceeded("BUDGET", retry_after=120.0)
    assert retry_countdown(4.0, budget) == 120.0
    assert retry_countdown(300.0, budget) == 300.0
    assert retry_countdown(4.0, CreditBudgetExceeded("BUDGET", retry_after=86_400)) == MAX_COUNTDOWN
    assert retry_countdown(4.0, RateLimited("TOO_MANY_REQUESTS")) == 4.0
    assert retry_countdown(None, None) is None
