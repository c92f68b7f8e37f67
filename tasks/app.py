"""The ordersync Celery app: ``celery -A tasks.app worker`` / ``celery -A tasks.app beat``.

Built once from the settings (``pipeline.settings.load_settings``) and the
``ORDERSYNC_CELERY_*`` variables; see ``tasks.config`` for every option and why.
"""

from __future__ import annotations

from tasks.config import ROUTES, CeleryOptions, Queue, create_app

__all__ = ["ROUTES", "CeleryOptions", "Queue", "app", "options"]

options = CeleryOptions.from_env()
app = create_app(options=options)
