"""The processes people start: the ``ordersync`` command line (``cli.main``, one module per
command group in ``cli.commands``) and the ``web`` process (``cli.web``: Zoho's job callbacks,
``/healthz``, ``/metrics``). Imports ``tasks`` and ``pipeline``; neither imports it."""
