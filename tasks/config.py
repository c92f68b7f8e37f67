"""Configuration of the Celery app: queues, routes, limits, broker options (no side effects).

The app itself is ``tasks.app.app`` (``celery -A tasks.app worker -Q ordersync.db,ordersync.zoho
-E``); this module only builds it, so tests and tools can import it without reading settings.

Numbers that must hold together (Redis broker; see ``docs/architecture.md``):

=====================  =======  ===================================================
``SOFT_TIME_LIMIT``      300 s  a task is asked to stop (``SoftTimeLimitExceeded``)
``TIME_LIMIT``           360 s  its process is killed
``MAX_COUNTDOWN``        900 s  the longest countdown any task may ask for (re-schedules,
                                retry back-off ``RETRY_BACKOFF_MAX`` = 600 s included)
``VISIBILITY_TIMEOUT``  3600 s  Redis hands an unacked message out again after this
=====================  =======  ===================================================

With Redis a message is "unacked" from the moment a worker takes it, and a countdown
(ETA) message is taken at once and held in the worker until it is due. So a message can
stay unacked for ``MAX_COUNTDOWN + TIME_LIMIT`` = 1,260 s; the visibility timeout is ~3× that,
so no healthy message is ever delivered twice, and a message of a worker that died is
delivered again at most an hour later (the ledger's sweeper usually re-enqueues sooner).

Settings come from ``pipeline.settings.load_settings`` (``broker_url``: ``[sync] broker_url`` or
``ORDERSYNC_SYNC_BROKER_URL``; Redis by default, ``amqp://…`` for RabbitMQ). The time limits and
back-off numbers live in ``tasks.base``. Celery-only knobs, read once here
from the environment (:class:`CeleryOptions`):

``ORDERSYNC_CELERY_NAMESPACE``
    Prefix for every broker name this app uses (queues, control and event exchanges, and all
    Redis keys via kombu's ``global_keyprefix``). Empty in production; lets two installs, or two
    test runs, share one Redis or RabbitMQ without seeing each other's messages.
``ORDERSYNC_CELERY_VISIBILITY_TIMEOUT``
    Seconds (default 3600). Tests lower it to see a killed worker's message come back quickly.
``ORDERSYNC_CELERY_RESTORE_INTERVAL``
    Seconds between sweeps for expired unacked messages (kombu default ≈ 100 s: a 10 s timer
    that scans every 10th tick). Tests set 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from pipeline.settings import Settings, load_settings
from tasks.base import MAX_COUNTDOWN, SOFT_TIME_LIMIT, TIME_LIMIT, OrdersyncTask
from tasks.schedule import BEAT_SCHEDULE, beat_schedule, verify_schedule

logger = logging.getLogger(__name__)

VISIBILITY_TIMEOUT = 3600
# Below this the broker may hand a healthy, merely-waiting message to a second worker.
SAFE_VISIBILITY_TIMEOUT = MAX_COUNTDOWN + TIME_LIMIT

LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] "
    "task=%(task_id)s run=%(run_id)s batch=%(batch_id)s %(name)s: %(message)s"
)

ENV_NAMESPACE = "ORDERSYNC_CELERY_NAMESPACE"
ENV_VISIBILITY_TIMEOUT = "ORDERSYNC_CELERY_VISIBILITY_TIMEOUT"
ENV_RESTORE_INTERVAL = "ORDERSYNC_CELERY_RESTORE_INTERVAL"


class Queue(StrEnum):
    """Our queues: database work and Zoho calls are kept apart so one cannot starve the other."""

    DB = "ordersync.db"
    ZOHO = "ordersync.zoho"


# Which queue each task goes to, by its stable name. Tasks not listed go to ``Queue.DB``.
ROUTES: dict[str, Queue] = {
    "ordersync.poll": Queue.ZOHO,
    # the initial sync's batch chain (tasks.initial): Zoho calls apart from database work
    "ordersync.initial.start": Queue.DB,
    "ordersync.extract": Queue.DB,
    "ordersync.render": Queue.DB,
    "ordersync.upload": Queue.ZOHO,
    "ordersync.create_job": Queue.ZOHO,
    "ordersync.reconcile": Queue.ZOHO,
    "ordersync.upsert": Queue.ZOHO,  # a run's rows cheaper by Upsert calls (initial sync)
    "ordersync.sweep": Queue.DB,
    "ordersync.realtime.check": Queue.ZOHO,  # tasks/ongoing.py: upserts
    "ordersync.interval.run": Queue.ZOHO,
    "ordersync.deletes.run": Queue.ZOHO,  # tasks/ongoing.py: Delete Records
    "ordersync.verify.start": Queue.ZOHO,  # tasks/verify.py: Bulk Read
    "ordersync.verify.advance": Queue.ZOHO,
}

# Modules the worker imports to register tasks.
TASK_MODULES: tuple[str, ...] = ("tasks.initial", "tasks.ongoing", "tasks.verify")


@dataclass(frozen=True)
class CeleryOptions:
    """Celery-only knobs that are not part of ``Settings`` (see the module docstring)."""

    namespace: str = ""
    visibility_timeout: int = VISIBILITY_TIMEOUT
    restore_interval: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CeleryOptions:
        """Read the ``ORDERSYNC_CELERY_*`` variables; a bad number names its variable."""
        env = os.environ if env is None else env
        options = cls(namespace=env.get(ENV_NAMESPACE, "").strip())
        if env.get(ENV_VISIBILITY_TIMEOUT):
            options = replace(
                options, visibility_timeout=_positive_int(env, ENV_VISIBILITY_TIMEOUT)
            )
        if env.get(ENV_RESTORE_INTERVAL):
            options = replace(options, restore_interval=_positive_int(env, ENV_RESTORE_INTERVAL))
        return options

    def name(self, base: str) -> str:
        """A broker name (queue, exchange) inside this namespace."""
        return f"{self.namespace}.{base}" if self.namespace else base

    def queue_name(self, queue: Queue) -> str:
        """The real name of ``queue`` on the broker (what ``celery worker -Q`` takes)."""
        return self.name(queue.value)


def _positive_int(env: Mapping[str, str], key: str) -> int:
    raw = env[key]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be a whole number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be positive, not {value}")
    return value


def celery_config(broker_url: str, options: CeleryOptions) -> dict[str, Any]:
    """The whole Celery configuration as data, for a broker URL and ``options``."""
    if options.visibility_timeout < SAFE_VISIBILITY_TIMEOUT:
        logger.warning(
            "visibility timeout %ss is below %ss (longest countdown + hard time limit): "
            "a waiting message may be delivered twice",
            options.visibility_timeout,
            SAFE_VISIBILITY_TIMEOUT,
        )
    transport_options: dict[str, Any] = {"visibility_timeout": options.visibility_timeout}
    if broker_url.startswith(("redis://", "rediss://")):
        if options.namespace:
            transport_options["global_keyprefix"] = f"{options.namespace}:"
        if options.restore_interval is not None:
            transport_options["unacked_restore_interval"] = options.restore_interval
            transport_options["unacked_restore_throttle"] = 1
    queues = [
        KombuQueue(
            options.queue_name(q),
            Exchange(options.queue_name(q), type="direct"),
            routing_key=options.queue_name(q),
        )
        for q in Queue
    ]
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": SOFT_TIME_LIMIT,
        "task_time_limit": TIME_LIMIT,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_log_format": LOG_FORMAT,
        "worker_task_log_format": LOG_FORMAT,
        "worker_hijack_root_logger": True,
        "task_queues": queues,
        "task_default_queue": options.queue_name(Queue.DB),
        "task_default_exchange": options.queue_name(Queue.DB),
        "task_default_routing_key": options.queue_name(Queue.DB),
        "task_create_missing_queues": False,
        "task_routes": {name: {"queue": options.queue_name(q)} for name, q in ROUTES.items()},
        "control_exchange": options.name("celery"),
        "event_exchange": options.name("celeryev"),
        "timezone": "UTC",
        "enable_utc": True,
        "include": list(TASK_MODULES),
        "beat_schedule": dict(BEAT_SCHEDULE),
    }


def create_app(settings: Settings | None = None, options: CeleryOptions | None = None) -> Celery:
    """A configured Celery app. Tests build their own to send into an isolated namespace."""
    settings = load_settings() if settings is None else settings
    options = CeleryOptions.from_env() if options is None else options
    celery_app = Celery("ordersync", task_cls=OrdersyncTask)
    celery_app.conf.update(celery_config(settings.broker_url, options))
    # One beat: `celery beat -S redbeat.RedBeatScheduler` (deploy/) keeps schedule and lock in
    # Redis; a second beat waits for the lock. 60 s lock, renewed by `--max-interval 10` ticks.
    celery_app.conf.update(
        redbeat_redis_url=settings.redis_url,
        redbeat_redis_options={},
        redbeat_key_prefix=":".join(filter(None, (options.namespace, "ordersync:redbeat"))),
        redbeat_lock_timeout=60,
    )
    celery_app.conf.beat_schedule = {
        **celery_app.conf.beat_schedule, **beat_schedule(settings), **verify_schedule(settings)
    }
    return celery_app
