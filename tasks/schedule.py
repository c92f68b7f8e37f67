"""The beat schedule, as data: one entry per periodic task, each with ``expires``.

Only one beat runs (``tasks.config``: redbeat's lock). An entry's ``expires`` drops a message
that waited longer than one period in the queue, so a stopped worker does not come back to a
pile of identical sweeps.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from pipeline.settings import Settings, SyncMode

REALTIME_CHECK = "ordersync.realtime.check"
INTERVAL_RUN = "ordersync.interval.run"
DELETES_RUN = "ordersync.deletes.run"
SWEEP_EVERY = 10.0  # seconds between sweeps
# A missed interval run (beat or workers down) is dropped after this long; the next one comes.
INTERVAL_EXPIRES = 3600

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Re-enqueue the step of any bulk batch (and the claim chain of any run) that stopped moving
    # for ``settings.stall_after`` seconds with no live worker on it: a worker died, a message
    # was lost. Every 10 s: one cheap query, so a dead worker's batch moves again in ~30 s.
    "ordersync.sweep": {
        "task": "ordersync.sweep",
        "schedule": SWEEP_EVERY,
        "options": {"expires": SWEEP_EVERY - 1},
    },
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The beat entries of ``settings.mode`` (and of deletes, when on): data, every entry
    with ``expires``."""
    entries: dict[str, dict[str, Any]] = {}
    if settings.mode in (SyncMode.REALTIME, SyncMode.BOTH):
        entries[REALTIME_CHECK] = {
            "task": REALTIME_CHECK,
            "schedule": settings.realtime_check,
            "options": {"expires": settings.realtime_check},
        }
    if settings.mode in (SyncMode.INTERVAL, SyncMode.BOTH):
        minute, hour, day_of_month, month, day_of_week = settings.interval_crontab.split()
        entries[INTERVAL_RUN] = {
            "task": INTERVAL_RUN,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month,
                day_of_week=day_of_week,
            ),
            "options": {"expires": INTERVAL_EXPIRES},
        }
    if settings.deletes:  # opt-in: tombstones of deleted legacy rows → Delete Records
        entries[DELETES_RUN] = {
            "task": DELETES_RUN,
            "schedule": settings.deletes_every,
            "options": {"expires": settings.deletes_every},
        }
    return entries


VERIFY_START = "ordersync.verify.start"
VERIFY_ADVANCE = "ordersync.verify.advance"
VERIFY_EXPIRES = 3600  # a start that waited an hour in the queue is dropped


def verify_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The verify entry when ``verify_crontab`` is set; none otherwise."""
    if not settings.verify_crontab:
        return {}
    minute, hour, day_of_month, month, day_of_week = settings.verify_crontab.split()
    return {
        VERIFY_START: {
            "task": VERIFY_START,
            "schedule": crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                                month_of_year=month, day_of_week=day_of_week),
            "options": {"expires": VERIFY_EXPIRES},
        }
    }
