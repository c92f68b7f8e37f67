"""The beat schedule, as data: one entry per periodic task, each with ``expires``.

Only one beat runs (``tasks.config``: redbeat's lock). An entry's ``expires`` drops a message
that waited longer than one period in the queue, so a stopped worker does not come back to a
pile of identical sweeps.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Re-enqueue the step of any bulk batch (and the claim chain of any run) that stopped moving
    # for ``settings.stall_after`` seconds: a worker died, a message was lost.
    "ordersync.sweep": {
        "task": "ordersync.sweep",
        "schedule": crontab(minute="*"),
        "options": {"expires": 50},
    },
}
