"""The Celery side of ordersync: thin tasks that take ids and call ``pipeline``.

``tasks.config``  queues, routes, limits and broker options as data (no side effects)
``tasks.app``     the app instance (``celery -A tasks.app worker|beat``)
``tasks.base``    ``OrdersyncTask``: retry policy, time limits, log context
``tasks.probe``   ``ordersync.probe``: a plumbing check used by the tests
``tasks.web``     the ``web`` process: Zoho's job callback and ``/healthz``
"""
