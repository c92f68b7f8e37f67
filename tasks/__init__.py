"""The Celery side of ordersync: thin tasks that take ids and call ``pipeline``.

``tasks.config``  queues, routes, limits and broker options as data (no side effects)
``tasks.app``     the app instance (``celery -A tasks.app worker|beat``)
``tasks.base``    ``OrdersyncTask``: retry policy, time limits, log context
"""
