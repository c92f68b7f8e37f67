"""The processes people start: the ``ordersync`` command line (``cli.main``, one module per
command group in ``cli.commands``). Imports ``tasks`` and ``pipeline``; neither imports it."""
