"""The one base class of every ordersync task: retry policy, time limits, log context.

Retry policy: only the TRANSIENT family (:data:`TRANSIENT_ERRORS`) is retried, with
exponential back-off and full jitter, capped at ``RETRY_BACKOFF_MAX`` and ``MAX_RETRIES``
attempts; an error that carries ``retry_after`` (Zoho's rate limit, our credit budget) waits at
least that long. Everything else fails the task at once. Tasks are ``acks_late``: a task that
is not idempotent must say ``acks_late=False``.

Log context: every log line written while a task runs (by the task or by ``pipeline``) carries
``task=<id> run=<run id> batch=<batch id>``. The ids are taken from the task's ``run_id`` and
``batch_id`` keyword arguments, or set in the body with :func:`bind_log_context`.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg2
import redis
from celery import Task
from celery.signals import after_setup_logger, after_setup_task_logger
from psycopg2.extensions import connection as Connection

from pipeline.legacy.connection import KeptConnection
from pipeline.settings import Settings, load_settings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import TransientZohoError
from pipeline.zoho.fields import cached_fields, derive_mapping

logger = logging.getLogger(__name__)

SOFT_TIME_LIMIT = 300  # seconds: SoftTimeLimitExceeded is raised in the task
TIME_LIMIT = 360  # seconds: the pool process running the task is killed
MAX_RETRIES = 8
RETRY_BACKOFF = 2  # seconds, doubled each retry: 2, 4, 8, … (full jitter: a random part of it)
RETRY_BACKOFF_MAX = 600  # seconds
MAX_COUNTDOWN = 900  # seconds: no countdown (re-schedule or retry) may be longer


# Errors worth retrying later: the database went away, Zoho said 429/5xx, the network dropped.
# Add a family here, never ``Exception``.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    TransientZohoError,
)


@functools.cache
def loaded_settings() -> Settings:
    """This process's settings as configured, read once (file and environment) on first use."""
    return load_settings()


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def worker_settings() -> Settings:
    """This process's settings, with the row rules Zoho's field metadata makes (the cached
    copy the checks keep in Redis, ``pipeline.zoho.fields``; the configured mapping alone when
    there is none). Never calls Zoho."""
    settings = loaded_settings()
    try:
        fields = cached_fields(
            _redis(settings.redis_url), settings.zoho.redis_prefix, settings.zoho.module
        )
    except redis.RedisError as exc:
        logger.warning("field metadata not read from Redis (%s): configured rules only", exc)
        return settings
    if not fields:
        return settings
    return replace(settings, mapping=derive_mapping(settings.mapping, fields))


_clients: dict[int, ZohoClient] = {}


def worker_client() -> ZohoClient:
    """One Zoho client per process, made on first use (a forked pool child makes its own)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()  # a parent's client is not used across a fork
        _clients[pid] = ZohoClient.from_settings(loaded_settings())
    return _clients[pid]


_kept = KeptConnection("ordersync-worker")


@contextmanager
def worker_db() -> Iterator[Connection]:
    """This process's connection to the legacy database, kept from task to task
    (:class:`pipeline.legacy.connection.KeptConnection`: each task gets it as new, with no open
    transaction and no advisory lock)."""
    with _kept.use(loaded_settings()) as conn:
        yield conn


_NO_ID = "-"
_task_id: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default=_NO_ID)
_run_id: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default=_NO_ID)
_batch_id: contextvars.ContextVar[str] = contextvars.ContextVar("batch_id", default=_NO_ID)


def bind_log_context(*, run_id: object = None, batch_id: object = None) -> None:
    """Put a run id and/or batch id on every following log line of the current task."""
    if run_id is not None:
        _run_id.set(str(run_id))
    if batch_id is not None:
        _batch_id.set(str(batch_id))


@contextmanager
def log_context(
    *, task_id: object = None, run_id: object = None, batch_id: object = None
) -> Iterator[None]:
    """Ids on every log line inside the block; the previous ids come back after it."""
    tokens = [
        (var, var.set(str(value)))
        for var, value in ((_task_id, task_id), (_run_id, run_id), (_batch_id, batch_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class LogContextFilter(logging.Filter):
    """Adds ``task_id``, ``run_id`` and ``batch_id`` to every record (``-`` when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = _task_id.get()
        if task_id != _NO_ID or not hasattr(record, "task_id"):
            record.task_id = task_id
        record.run_id = _run_id.get()
        record.batch_id = _batch_id.get()
        return True


def install_log_context(target: logging.Logger | None = None) -> None:
    """Add :class:`LogContextFilter` to every handler of ``target`` (the root logger)."""
    target = logging.getLogger() if target is None else target
    for handler in target.handlers:
        if not any(isinstance(f, LogContextFilter) for f in handler.filters):
            handler.addFilter(LogContextFilter())


@after_setup_logger.connect
@after_setup_task_logger.connect
def _on_setup_logger(logger: logging.Logger, **_: Any) -> None:
    install_log_context(logger)


def retry_countdown(countdown: float | None, exc: BaseException | None) -> float | None:
    """Seconds before a retry: at least the error's ``retry_after`` (Zoho's or our budget's
    "not before"), never more than ``MAX_COUNTDOWN``; None keeps Celery's default delay.
    """
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > (countdown or 0):
        countdown = float(retry_after)
    return None if countdown is None else min(float(countdown), MAX_COUNTDOWN)


class OrdersyncTask(Task):  # type: ignore[misc]
    """Base of every ordersync task (set as the app's ``task_cls``)."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = RETRY_BACKOFF
    retry_backoff_max = RETRY_BACKOFF_MAX
    retry_jitter = True
    max_retries = MAX_RETRIES
    soft_time_limit = SOFT_TIME_LIMIT
    time_limit = TIME_LIMIT
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with log_context(
            task_id=self.request.id, run_id=kwargs.get("run_id"), batch_id=kwargs.get("batch_id")
        ):
            return super().__call__(*args, **kwargs)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``retry``, with the countdown from :func:`retry_countdown`."""
        countdown = retry_countdown(kwargs.get("countdown"), kwargs.get("exc"))
        if countdown is not None:
            kwargs["countdown"] = countdown
        return super().retry(*args, **kwargs)

    def schedule_again(self, countdown: float, *args: Any, **kwargs: Any) -> str:
        """Send this task again with the same kind of arguments after ``countdown`` seconds.

        The way to wait (e.g. poll a Zoho job): never sleep in a task. Not a retry, so it
        does not count against ``max_retries``. The countdown is capped at ``MAX_COUNTDOWN``.
        Returns the new task id.
        """
        countdown = max(0.0, min(float(countdown), MAX_COUNTDOWN))
        result = self.apply_async(args=args, kwargs=kwargs, countdown=countdown)
        logger.info("%s scheduled again in %.1fs as %s", self.name, countdown, result.id)
        return str(result.id)
